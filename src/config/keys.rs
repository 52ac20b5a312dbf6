//! TSIG keys (RFC 8945): shared secrets read from files in BIND's key format.
//!
//! Why this exists: `allow_transfer` and `also_notify` entries name keys; the config reads
//! them here, and `dns::tsig` signs and verifies with them.
//!
//! Documented rules:
//! - A key file holds what `tsig-keygen NAME` prints (`dig -k` and `named` read the same
//!   file): `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`, any number per
//!   file, with `#`, `//` and `/* */` comments.
//! - Algorithms: hmac-sha256, hmac-sha384, hmac-sha512. MD5, SHA-1 and SHA-224 are refused.
//! - Key names are compared without case; one name defined twice is an error.

use std::path::Path;

use base64::Engine as _;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::Name;

/// One shared secret, known by name.
pub struct TsigKey {
    pub(crate) name: Name,
    pub(crate) algorithm: TsigAlgorithm,
    pub(crate) secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(formatter, "TsigKey({} {})", self.name, self.algorithm)
    }
}

impl PartialEq for TsigKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.algorithm == other.algorithm && self.secret == other.secret
    }
}

impl TsigKey {
    /// A key from its parts; `algorithm` as BIND writes it ("hmac-sha256").
    pub fn new(name: &str, algorithm: &str, secret: Vec<u8>) -> Result<Self, String> {
        let mut name = Name::from_ascii(name)
            .map_err(|error| format!("{name:?} is not a key name: {error}"))?
            .to_lowercase();
        name.set_fqdn(true);
        let algorithm = match algorithm.to_ascii_lowercase().trim_end_matches('.') {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            "hmac-sha512" => TsigAlgorithm::HmacSha512,
            other => {
                return Err(format!(
                    "{other:?} is not supported; use hmac-sha256 (tsig-keygen's default), hmac-sha384 or hmac-sha512"
                ))
            }
        };
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self {
            name,
            algorithm,
            secret,
        })
    }

    /// The key's name (lowercase, fully qualified).
    pub fn name(&self) -> &Name {
        &self.name
    }

    pub(crate) fn mac(&self, data: &[u8]) -> Vec<u8> {
        self.algorithm
            .mac_data(&self.secret, data)
            .expect("only supported algorithms are constructed")
    }

    pub(crate) fn mac_length(&self) -> usize {
        mac_length(&self.algorithm)
    }

    /// The bytes a TSIG record signed with this key takes (Other Data up to 6 bytes): what
    /// a response must leave free for it.
    pub fn record_length(&self) -> usize {
        record_length(&self.name, &self.algorithm)
    }
}

/// The MAC length of a supported algorithm (the largest, 64, for any other).
pub(crate) fn mac_length(algorithm: &TsigAlgorithm) -> usize {
    match algorithm {
        TsigAlgorithm::HmacSha256 => 32,
        TsigAlgorithm::HmacSha384 => 48,
        _ => 64,
    }
}

/// The bytes a TSIG record with this owner and algorithm takes, with a full MAC and up to
/// 6 bytes of Other Data.
pub(crate) fn record_length(key_name: &Name, algorithm: &TsigAlgorithm) -> usize {
    let owner = key_name.to_ascii().len() + 1;
    let algorithm_name = algorithm.to_name().to_ascii().len() + 2;
    // type, class, TTL, RDLENGTH; time, fudge, MAC size, MAC, original ID, error, other.
    owner + 10 + algorithm_name + 6 + 2 + 2 + mac_length(algorithm) + 2 + 2 + 2 + 6
}

/// Why a key file was not read: the file and line say where.
#[derive(Debug, thiserror::Error)]
#[error("{line}: {key}: {message}")]
pub struct KeyFileError {
    pub line: usize,
    pub key: &'static str,
    pub message: String,
}

/// The keys in a BIND key file's text.
pub fn parse_key_file(text: &str) -> Result<Vec<TsigKey>, KeyFileError> {
    let tokens = tokenize(text)?;
    let mut keys = Vec::new();
    let mut at = 0;
    let error = |line, key, message: String| KeyFileError { line, key, message };
    let expect = |at: usize, want: &str, key| -> Result<usize, KeyFileError> {
        match tokens.get(at) {
            Some((_, token)) if token == want => Ok(at + 1),
            Some((line, token)) => Err(error(
                *line,
                key,
                format!("expected {want:?}, found {token:?}"),
            )),
            None => Err(error(
                tokens.last().map_or(1, |(line, _)| *line),
                key,
                format!("expected {want:?} before the end of the file"),
            )),
        }
    };
    while at < tokens.len() {
        let (line, word) = &tokens[at];
        if word != "key" {
            return Err(error(
                *line,
                "key",
                format!("expected `key \"NAME\" {{ ... }};`, found {word:?}"),
            ));
        }
        let Some((name_line, name)) = tokens.get(at + 1) else {
            return Err(error(*line, "key", "a key needs a name".into()));
        };
        at = expect(at + 2, "{", "key")?;
        let (mut algorithm, mut secret) = (None, None);
        while tokens.get(at).is_some_and(|(_, token)| token != "}") {
            let (field_line, field) = &tokens[at];
            let Some((_, value)) = tokens.get(at + 1) else {
                return Err(error(*field_line, "key", format!("{field} needs a value")));
            };
            match field.as_str() {
                "algorithm" => algorithm = Some((*field_line, value.clone())),
                "secret" => secret = Some((*field_line, value.clone())),
                other => {
                    return Err(error(
                        *field_line,
                        "key",
                        format!("unknown statement {other:?} (expected algorithm or secret)"),
                    ))
                }
            }
            at = expect(at + 2, ";", "key")?;
        }
        at = expect(at, "}", "key")?;
        at = expect(at, ";", "key")?;
        let (algorithm_line, algorithm) = algorithm.ok_or_else(|| {
            error(
                *name_line,
                "algorithm",
                format!("key {name:?} has no algorithm"),
            )
        })?;
        let (secret_line, secret) = secret
            .ok_or_else(|| error(*name_line, "secret", format!("key {name:?} has no secret")))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.as_bytes())
            .map_err(|problem| error(secret_line, "secret", format!("not base64: {problem}")))?;
        let key = TsigKey::new(name, &algorithm, secret).map_err(|message| {
            let (line, key) = if message.contains("supported") {
                (algorithm_line, "algorithm")
            } else if message.contains("secret") {
                (secret_line, "secret")
            } else {
                (*name_line, "key")
            };
            error(line, key, message)
        })?;
        if keys.iter().any(|other: &TsigKey| other.name == key.name) {
            return Err(error(
                *name_line,
                "key",
                format!("key {name:?} is defined twice"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

/// Reads a key file; errors name the file.
pub fn read_key_file(path: &Path) -> Result<Vec<TsigKey>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| KeyFileError {
        line: 0,
        key: "key_files",
        message: format!("cannot read: {error}"),
    })?;
    parse_key_file(&text)
}

/// Words, quoted strings and the punctuation `{ } ;`, each with its line; comments dropped.
fn tokenize(text: &str) -> Result<Vec<(usize, String)>, KeyFileError> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let (mut at, mut line) = (0, 1);
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b'\n' => {
                line += 1;
                at += 1;
            }
            _ if byte.is_ascii_whitespace() => at += 1,
            b'#' => at = text[at..].find('\n').map_or(bytes.len(), |end| at + end),
            b'/' if bytes.get(at + 1) == Some(&b'/') => {
                at = text[at..].find('\n').map_or(bytes.len(), |end| at + end)
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                let end = text[at + 2..].find("*/").ok_or(KeyFileError {
                    line,
                    key: "key",
                    message: "a /* comment is not closed".into(),
                })?;
                line += text[at..at + 2 + end].matches('\n').count();
                at += end + 4;
            }
            b'{' | b'}' | b';' => {
                tokens.push((line, (byte as char).to_string()));
                at += 1;
            }
            b'"' => {
                let end = text[at + 1..].find('"').ok_or(KeyFileError {
                    line,
                    key: "key",
                    message: "a quoted string is not closed".into(),
                })?;
                tokens.push((line, text[at + 1..at + 1 + end].to_string()));
                line += text[at + 1..at + 1 + end].matches('\n').count();
                at += end + 2;
            }
            _ => {
                let end = text[at..]
                    .find(|c: char| c.is_ascii_whitespace() || "{};\"#".contains(c))
                    .map_or(bytes.len(), |end| at + end);
                tokens.push((line, text[at..end].to_string()));
                at = end;
            }
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_tsig_keygen_writes_with_comments() {
        let text = "# from tsig-keygen\nkey \"transfer.example\" {\n\talgorithm hmac-sha256;\n\tsecret \"ZW5vdWdoIHNlY3JldCBieXRlcw==\";\n};\n\
                    /* a second\n key */ key two { algorithm HMAC-SHA512; // trailing\n secret \"dHdv\"; };\n";
        let keys = parse_key_file(text).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name().to_ascii(), "transfer.example.");
        assert_eq!(keys[0].secret, b"enough secret bytes");
        assert_eq!(keys[1].algorithm, TsigAlgorithm::HmacSha512);
        assert!(format!("{:?}", keys[0]).contains("transfer.example"));
        assert!(
            !format!("{:?}", keys[0]).contains("ZW5v"),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn errors_name_the_line_and_statement() {
        let error = |text: &str| parse_key_file(text).unwrap_err().to_string();
        assert_eq!(
            error("key \"a\" {\n algorithm hmac-sha1;\n secret \"dHdv\";\n};"),
            "2: algorithm: \"hmac-sha1\" is not supported; use hmac-sha256 (tsig-keygen's default), hmac-sha384 or hmac-sha512"
        );
        assert!(
            error("key \"a\" {\n algorithm hmac-sha256;\n secret \"***\";\n};")
                .starts_with("3: secret: not base64")
        );
        assert!(error("key \"a\" {\n algorithm hmac-sha256;\n};")
            .starts_with("1: secret: key \"a\" has no secret"));
        assert!(
            error("key \"a\" {\n algorithm hmac-sha256;\n secret \"dHdv\"\n};")
                .starts_with("4: key: expected \";\"")
        );
        assert!(error("options { };").starts_with("1: key: expected `key"));
        assert!(error("key \"a\" { algorithm hmac-sha256; secret \"dHdv\"; };\nkey \"A\" { algorithm hmac-sha256; secret \"dHdv\"; };").contains("defined twice"));
        assert!(error("key \"a\" { secret \"dHdv").contains("not closed"));
    }
}
