//! Loading BIND master files (RFC 1035 §5) into records, with file and line on every error.
//!
//! Why this exists: hickory-proto's `Parser` reads a whole file into a map and its errors carry
//! no line numbers, so an operator cannot tell which line is wrong. This module does the
//! line-oriented part itself (entries, parentheses, quotes, comments, `$ORIGIN`, `$TTL`,
//! `$INCLUDE`, owner and TTL inheritance) and hands each record's RDATA to hickory's parser,
//! which knows every record type's presentation format. It then checks what a served zone needs
//! (one SOA at the apex, NS at the apex, nothing outside the origin, no CNAME beside other data)
//! and reports every problem it finds, not just the first.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::zone::snapshot::{is_within, name_key, sort_canonical, NameKey, MAX_NAME_LEN};
use hickory_proto::serialize::txt::{parse_ttl, Parser};

/// How deep `$INCLUDE` may nest before the file is rejected (a loop guard).
const MAX_INCLUDE_DEPTH: usize = 16;

/// One problem in a zone file, located as precisely as the problem allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneError {
    /// The file the problem is in (an `$INCLUDE`d file names itself, not its parent).
    pub path: PathBuf,
    /// 1-based line, or `None` when the problem belongs to the zone as a whole.
    pub line: Option<u32>,
    /// What is wrong, in words an operator can act on.
    pub message: String,
}

impl fmt::Display for ZoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.path.display(), line, self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ZoneError {}

/// Every problem found in one zone file; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneErrors(pub Vec<ZoneError>);

impl fmt::Display for ZoneErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ZoneErrors {}

/// A record as loaded, with where it came from.
#[derive(Debug, Clone)]
pub struct SourcedRecord {
    pub record: Record,
    pub line: u32,
}

/// A zone file that parsed and passed the checks a served zone needs.
#[derive(Debug, Clone)]
pub struct ZoneData {
    pub origin: Name,
    /// Records in file order, duplicates removed.
    pub records: Vec<SourcedRecord>,
    /// Each record's owner key and index in `records`, in canonical order (file order within
    /// an owner): the order the snapshot is built in, sorted once when the zone is checked.
    pub(crate) owners: Vec<(NameKey, u32)>,
}

impl ZoneData {
    /// The apex SOA (its presence is checked at load).
    pub fn soa(&self) -> &Record {
        self.records
            .iter()
            .map(|sourced| &sourced.record)
            .find(|record| record.record_type() == RecordType::SOA)
            .expect("a loaded zone always has an SOA")
    }

    /// The serial of the apex SOA.
    pub fn soa_serial(&self) -> u32 {
        match &self.soa().data {
            RData::SOA(soa) => soa.serial,
            _ => unreachable!("soa() returns an SOA"),
        }
    }
}

/// Reads and checks the master file at `path` for the zone `origin`.
pub fn load_zone_file(path: &Path, origin: &Name) -> Result<ZoneData, ZoneErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ZoneErrors(vec![ZoneError {
            path: path.to_path_buf(),
            line: None,
            message: format!("cannot read zone file: {error}"),
        }])
    })?;
    parse_zone(&text, path, origin)
}

/// Parses and checks zone text; `path` names the source in errors and anchors `$INCLUDE`.
pub fn parse_zone(text: &str, path: &Path, origin: &Name) -> Result<ZoneData, ZoneErrors> {
    let mut origin = origin.clone();
    origin.set_fqdn(true);
    let started = std::time::Instant::now();
    let split = if text.len() >= PARALLEL_FROM {
        split_point(text)
    } else {
        None
    };
    let (reader, halves) = match split {
        Some(split) => read_in_two(text, path, &origin, split),
        None => (read_whole(text, path, &origin), false),
    };
    let Reader {
        mut errors,
        records,
    } = reader;
    let read_ms = started.elapsed().as_millis() as u64;
    let (records, owners) = check_zone(&origin, records, path, &mut errors);
    tracing::debug!(
        path = %path.display(),
        read_ms,
        in_two_halves = halves,
        checked_ms = started.elapsed().as_millis() as u64 - read_ms,
        "zone file parsed"
    );
    if errors.is_empty() {
        Ok(ZoneData {
            origin,
            records,
            owners,
        })
    } else {
        Err(ZoneErrors(errors))
    }
}

/// Zone files from this size on are read by two threads (see `read_in_two`).
const PARALLEL_FROM: usize = 4 << 20;

fn read_whole(text: &str, path: &Path, origin: &Name) -> Reader {
    let mut reader = Reader::default();
    reader.read_text(text, path, &mut FileState::new(origin), 0);
    reader
}

/// Reads `text` as two halves at once, the second from `split` (a line start), which halves
/// a large zone's parse time on a second core. The second half starts speculatively, in the
/// state the `$ORIGIN` and `$TTL` lines before `split` set. The result is kept only if the
/// first half ends with a whole entry (no open parenthesis or quote) and in that same
/// state; otherwise the file is read again as a whole. Either way it is what `read_whole`
/// gives, records and errors alike (a test splits a tricky file at every line to show it).
/// Also says whether the halves were kept.
fn read_in_two(text: &str, path: &Path, origin: &Name, split: usize) -> (Reader, bool) {
    let (first, second) = text.split_at(split);
    if !starts_with_owner(second) || !first.ends_with('\n') || first.contains("\\\n") {
        return (read_whole(text, path, origin), false);
    }
    let mut guessed = FileState::new(origin);
    let mut ignored = Reader::default();
    for line in directive_lines(first) {
        let _ = split_entries(line, |entry| {
            ignored.directive(entry, path, &mut guessed, 0)
        });
    }
    let (mut head, head_state, tail) = std::thread::scope(|scope| {
        let tail = scope.spawn(|| {
            let mut reader = Reader::default();
            let mut state = guessed.clone();
            reader.read_text(second, path, &mut state, 0);
            reader
        });
        let mut head = Reader::default();
        let mut state = FileState::new(origin);
        let whole = head.read_text(first, path, &mut state, 0);
        let tail = tail.join();
        (head, whole.then_some(state), tail)
    });
    let same_state = head_state.is_some_and(|state| {
        state.origin == guessed.origin
            && state.default_ttl == guessed.default_ttl
            && (state.default_ttl.is_some() || state.last_ttl == guessed.last_ttl)
    });
    let Ok(mut tail) = tail else {
        return (read_whole(text, path, origin), false);
    };
    if !same_state {
        return (read_whole(text, path, origin), false);
    }
    let offset = first.bytes().filter(|&byte| byte == b'\n').count() as u32;
    for sourced in &mut tail.records {
        sourced.line += offset;
    }
    for error in &mut tail.errors {
        if let Some(line) = &mut error.line {
            *line += offset;
        }
    }
    head.records.append(&mut tail.records);
    head.errors.append(&mut tail.errors);
    (head, true)
}

/// Where to split `text` for `read_in_two`: the first line start after the middle whose
/// line begins with an owner name (not blank, a comment, a directive or a parenthesis), if
/// the file has no `$INCLUDE` (whose records' lines count in their own file) and no escaped
/// newline before it (which the tokenizer does not count as a line).
fn split_point(text: &str) -> Option<usize> {
    if directive_lines(text).any(|line| {
        line.get(..8)
            .is_some_and(|name| name.eq_ignore_ascii_case("$INCLUDE"))
    }) {
        return None;
    }
    let mut at = text.len() / 2;
    for _ in 0..10_000 {
        at += text[at..].find('\n')? + 1;
        if starts_with_owner(&text[at..]) {
            return (!text[..at].contains("\\\n")).then_some(at);
        }
    }
    None
}

/// True when `text` begins with an owner name: not blank, a comment, a directive or a
/// parenthesis or quote, so that nothing before it is needed to read it.
fn starts_with_owner(text: &str) -> bool {
    text.as_bytes().first().is_some_and(|&byte| {
        !matches!(
            byte,
            b' ' | b'\t' | b'\r' | b'\n' | b';' | b'$' | b'(' | b')' | b'"'
        )
    })
}

/// The lines of `text` that start with `$`, each without its newline.
fn directive_lines(text: &str) -> impl Iterator<Item = &str> {
    let starts = text
        .starts_with('$')
        .then_some(0)
        .into_iter()
        .chain(text.match_indices("\n$").map(|(at, _)| at + 1));
    starts.map(move |start| {
        let end = text[start..]
            .find('\n')
            .map_or(text.len(), |end| start + end);
        &text[start..end]
    })
}

/// The parsing context that `$ORIGIN`, `$TTL` and owner inheritance change as a file is read.
#[derive(Clone)]
struct FileState {
    origin: Name,
    default_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
}

impl FileState {
    fn new(origin: &Name) -> Self {
        Self {
            origin: origin.clone(),
            default_ttl: None,
            last_ttl: None,
            last_owner: None,
        }
    }
}

#[derive(Default)]
struct Reader {
    errors: Vec<ZoneError>,
    records: Vec<SourcedRecord>,
}

impl Reader {
    fn error(&mut self, path: &Path, line: u32, message: impl Into<String>) {
        self.errors.push(ZoneError {
            path: path.to_path_buf(),
            line: Some(line),
            message: message.into(),
        });
    }

    /// Reads `text` into records and errors; false when it ends inside an entry (an open
    /// parenthesis or quote) or has a stray parenthesis.
    fn read_text(&mut self, text: &str, path: &Path, state: &mut FileState, depth: usize) -> bool {
        // About one record per line: reserve once instead of growing a large vector.
        self.records
            .reserve(text.bytes().filter(|&byte| byte == b'\n').count());
        let split = split_entries(text, |entry| {
            let first = &entry.tokens[0];
            if !entry.blank_owner && !first.quoted && first.text.starts_with('$') {
                self.directive(entry, path, state, depth);
            } else if let Err(message) = self.record(entry, text, state) {
                self.error(path, entry.line, message);
            }
        });
        match split {
            Ok(()) => true,
            Err((line, message)) => {
                self.error(path, line, message);
                false
            }
        }
    }

    fn directive(&mut self, entry: &Entry, path: &Path, state: &mut FileState, depth: usize) {
        let name = entry.tokens[0].text.to_ascii_uppercase();
        let argument = entry.tokens.get(1).map(|token| token.text);
        match (name.as_str(), argument) {
            ("$ORIGIN", Some(value)) => match Name::parse(value, Some(&state.origin)) {
                Ok(mut name) => {
                    name.set_fqdn(true);
                    state.origin = name;
                }
                Err(error) => {
                    self.error(path, entry.line, format!("bad $ORIGIN {value:?}: {error}"))
                }
            },
            ("$TTL", Some(value)) => match parse_ttl_token(value) {
                Some(ttl) => state.default_ttl = Some(ttl),
                None => self.error(path, entry.line, format!("bad $TTL {value:?}")),
            },
            ("$INCLUDE", Some(value)) => {
                if depth >= MAX_INCLUDE_DEPTH {
                    self.error(path, entry.line, "$INCLUDE nested too deeply (a loop?)");
                    return;
                }
                let included = path.parent().unwrap_or(Path::new(".")).join(value);
                let included_text = match std::fs::read_to_string(&included) {
                    Ok(included_text) => included_text,
                    Err(error) => {
                        self.error(
                            path,
                            entry.line,
                            format!("cannot read $INCLUDE file {}: {error}", included.display()),
                        );
                        return;
                    }
                };
                // RFC 1035 §5.1: an $INCLUDE may set its own origin, and neither it nor the
                // included file changes the including file's origin.
                let mut inner = FileState {
                    origin: state.origin.clone(),
                    default_ttl: state.default_ttl,
                    last_ttl: state.last_ttl,
                    last_owner: state.last_owner.clone(),
                };
                if let Some(origin_token) = entry.tokens.get(2) {
                    match Name::parse(origin_token.text, Some(&state.origin)) {
                        Ok(origin) => inner.origin = origin,
                        Err(error) => {
                            self.error(path, entry.line, format!("bad $INCLUDE origin: {error}"));
                            return;
                        }
                    }
                }
                self.read_text(&included_text, &included, &mut inner, depth + 1);
            }
            ("$ORIGIN" | "$TTL" | "$INCLUDE", None) => {
                self.error(path, entry.line, format!("{name} needs an argument"))
            }
            _ => self.error(path, entry.line, format!("unsupported directive {name}")),
        }
    }

    fn record(&mut self, entry: &Entry, text: &str, state: &mut FileState) -> Result<(), String> {
        let mut tokens = entry.tokens.iter().peekable();
        let owner = if entry.blank_owner {
            state
                .last_owner
                .clone()
                .ok_or("record has no owner name and no previous record to inherit one from")?
        } else {
            let token = tokens.next().expect("entries have at least one token");
            let owner = if token.quoted {
                Name::parse(token.text, Some(&state.origin))
            } else {
                name_at(token.text, &state.origin)
            }
            .map_err(|error| format!("bad owner name {:?}: {error}", token.text))?;
            state.last_owner = Some(owner.clone());
            owner
        };

        let mut ttl = None;
        let mut class = None;
        let record_type = loop {
            let token = tokens
                .next()
                .ok_or_else(|| format!("record for {owner} has no type"))?;
            if ttl.is_none() && token.text.starts_with(|c: char| c.is_ascii_digit()) {
                ttl = Some(
                    parse_ttl_token(token.text)
                        .ok_or_else(|| format!("bad TTL {:?}", token.text))?,
                );
                continue;
            }
            let upper = token.text.to_ascii_uppercase();
            if class.is_none() {
                // RFC 3597 §5: CLASS1 is IN.
                let parsed = match upper.strip_prefix("CLASS").map(str::parse::<u16>) {
                    Some(Ok(code)) => Ok(DNSClass::from(code)),
                    _ => DNSClass::from_str(&upper),
                };
                if let Ok(parsed) = parsed {
                    class = Some(parsed);
                    continue;
                }
            }
            let record_type = parse_type(&upper)
                .ok_or_else(|| format!("unknown record type or bad field {:?}", token.text))?;
            break (record_type, token.end);
        };
        let (record_type, rdata_start) = record_type;
        if let Some(class) = class {
            if class != DNSClass::IN {
                return Err(format!("class {class} is not served; only IN"));
            }
        }
        let ttl = match ttl {
            Some(ttl) => {
                state.last_ttl = Some(ttl);
                ttl
            }
            None => state
                .default_ttl
                .or(state.last_ttl)
                .ok_or("record has no TTL and there is no $TTL before it")?,
        };
        let rdata_text = &text[rdata_start..entry.end];
        let rdata_tokens: Vec<&Token> = tokens.collect();
        let record = parse_record(
            &owner,
            ttl,
            record_type,
            rdata_text,
            &rdata_tokens,
            &state.origin,
        )?;
        self.records.push(SourcedRecord {
            record,
            line: entry.line,
        });
        Ok(())
    }
}

/// A type mnemonic, or the RFC 3597 §5 form `TYPEnnn` for any type, known or not.
fn parse_type(upper: &str) -> Option<RecordType> {
    if let Some(digits) = upper.strip_prefix("TYPE") {
        if !digits.is_empty() && digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return digits.parse::<u16>().ok().map(RecordType::from);
        }
    }
    match RecordType::from_str(upper) {
        Ok(RecordType::Unknown(_)) | Err(_) => None,
        Ok(known) => Some(known),
    }
}

/// Parses one record's RDATA: the RFC 3597 generic form and TXT from the lexer's tokens,
/// every other type with hickory's presentation-format parsers.
fn parse_record(
    owner: &Name,
    ttl: u32,
    record_type: RecordType,
    rdata_text: &str,
    rdata_tokens: &[&Token],
    origin: &Name,
) -> Result<Record, String> {
    if let Some((first, rest)) = rdata_tokens.split_first() {
        if first.text == "\\#" && !first.quoted {
            let data = parse_generic(record_type, rest)?;
            return Ok(Record::from_rdata(owner.clone(), ttl, data));
        }
    }
    if let RecordType::Unknown(code) = record_type {
        return Err(format!(
            "TYPE{code} has no known text form: write its data as \\# <length> <hex> (RFC 3597)"
        ));
    }
    if record_type == RecordType::TXT {
        // hickory's parser decodes `\DDD` above 127 as a Unicode code point (two or more
        // bytes), so TXT character-strings are decoded here.
        let strings = rdata_tokens
            .iter()
            .map(|token| character_string(token.text))
            .collect::<Result<Vec<_>, _>>()?;
        if strings.is_empty() {
            return Err("TXT needs at least one character-string".into());
        }
        let txt =
            hickory_proto::rr::rdata::TXT::from_bytes(strings.iter().map(Vec::as_slice).collect());
        return Ok(Record::from_rdata(owner.clone(), ttl, RData::TXT(txt)));
    }
    if let Some(data) = parse_common(record_type, rdata_tokens, origin) {
        return Ok(Record::from_rdata(owner.clone(), ttl, data?));
    }
    let single = format!("$ORIGIN {origin}\n{owner} {ttl} IN {record_type} {rdata_text}\n");
    let (_, sets) = Parser::new(single, None, Some(origin.clone()))
        .parse()
        .map_err(|error| format!("bad {record_type} record: {error}"))?;
    let record = sets
        .into_values()
        .next()
        .and_then(|set| set.records_without_rrsigs().next().cloned())
        .ok_or_else(|| format!("bad {record_type} record: no data"))?;
    if matches!(record.data, RData::Update0(_)) {
        return Err(format!("{record_type} record has no data"));
    }
    Ok(record)
}

/// An unquoted name field: `@` is the origin, a relative name is completed with it.
fn name_at(text: &str, origin: &Name) -> Result<Name, hickory_proto::ProtoError> {
    if text == "@" {
        return Ok(origin.clone());
    }
    if let Some(name) = plain_name(text, origin) {
        return Ok(name);
    }
    Name::parse(text, Some(origin))
}

/// A name of letters, digits and hyphens only, read as `Name::parse` reads it (lowercased,
/// relative to `origin` unless it ends with a dot) but without its IDNA mapping, which was
/// most of the time spent on a large zone's names. `None` for anything else (escapes,
/// underscores, wildcards, `xn--` labels, over-long names): `Name::parse` decides those.
fn plain_name(text: &str, origin: &Name) -> Option<Name> {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let (body, absolute) = match text.strip_suffix('.') {
        Some(body) => (body, true),
        None => (text, false),
    };
    let mut wire = [0u8; MAX_NAME_LEN + 1];
    let mut at = 0;
    let mut put = |label: &[u8], lowercase: bool| -> Option<()> {
        if label.is_empty() || label.len() > 63 || at + 1 + label.len() >= MAX_NAME_LEN {
            return None;
        }
        wire[at] = label.len() as u8;
        for (index, byte) in label.iter().enumerate() {
            wire[at + 1 + index] = if lowercase {
                byte.to_ascii_lowercase()
            } else {
                *byte
            };
        }
        at += 1 + label.len();
        Some(())
    };
    for label in body.split('.') {
        let bytes = label.as_bytes();
        let plain = bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-');
        let hyphen_edge = bytes.first() == Some(&b'-') || bytes.last() == Some(&b'-');
        if !plain || hyphen_edge || bytes.get(2..4) == Some(b"--") {
            return None;
        }
        put(bytes, true)?;
    }
    if !absolute {
        for label in origin.iter() {
            put(label, false)?;
        }
    }
    Name::read(&mut BinDecoder::new(&wire[..at + 1])).ok()
}

/// The most common types (A, AAAA, NS, CNAME, PTR, MX) parsed directly from their tokens:
/// hickory's `Parser`, built per record, costs about ten times more, which is most of the
/// load time of a large zone. `None`: another type or form, for hickory's parser.
fn parse_common(
    record_type: RecordType,
    tokens: &[&Token],
    origin: &Name,
) -> Option<Result<RData, String>> {
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR};
    if tokens.iter().any(|token| token.quoted) {
        return None;
    }
    let name =
        |text: &str| name_at(text, origin).map_err(|error| format!("bad name {text:?}: {error}"));
    let texts: smallvec::SmallVec<[&str; 2]> = tokens.iter().map(|token| token.text).collect();
    Some(match (record_type, texts.as_slice()) {
        (RecordType::A, [address]) => address
            .parse()
            .map(|address| RData::A(A(address)))
            .map_err(|_| format!("bad A record: {address:?} is not an IPv4 address")),
        (RecordType::AAAA, [address]) => address
            .parse()
            .map(|address| RData::AAAA(AAAA(address)))
            .map_err(|_| format!("bad AAAA record: {address:?} is not an IPv6 address")),
        (RecordType::NS, [target]) => name(target).map(|target| RData::NS(NS(target))),
        (RecordType::CNAME, [target]) => name(target).map(|target| RData::CNAME(CNAME(target))),
        (RecordType::PTR, [target]) => name(target).map(|target| RData::PTR(PTR(target))),
        (RecordType::MX, [preference, exchange]) => {
            let preference = preference
                .parse::<u16>()
                .map_err(|_| format!("bad MX record: preference {preference:?}"));
            match preference {
                Ok(preference) => {
                    name(exchange).map(|exchange| RData::MX(MX::new(preference, exchange)))
                }
                Err(error) => Err(error),
            }
        }
        _ => return None,
    })
}

/// RFC 3597 §5 generic RDATA after `\#`: a length and that many bytes in hex.
fn parse_generic(record_type: RecordType, tokens: &[&Token]) -> Result<RData, String> {
    let mut fields = tokens.iter().map(|token| token.text);
    let length: u16 = fields
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| format!("bad {record_type} record: \\# needs a length"))?;
    let hex_text: String = fields.collect();
    let bytes = hex::decode(&hex_text)
        .map_err(|error| format!("bad {record_type} record: \\# data is not hex: {error}"))?;
    if bytes.len() != usize::from(length) {
        return Err(format!(
            "bad {record_type} record: \\# says {length} bytes but has {}",
            bytes.len()
        ));
    }
    let mut decoder = hickory_proto::serialize::binary::BinDecoder::new(&bytes);
    let data = RData::read(
        &mut decoder,
        record_type,
        hickory_proto::serialize::binary::Restrict::new(length),
    )
    .map_err(|error| format!("bad {record_type} record: {error}"))?;
    if !decoder.is_empty() {
        return Err(format!(
            "bad {record_type} record: \\# data has trailing bytes"
        ));
    }
    Ok(data)
}

/// One character-string's bytes (RFC 1035 §5.1) from a token as the lexer keeps it (quotes
/// removed, escapes not): `\\X` is X, `\\DDD` the byte DDD; at most 255 bytes.
fn character_string(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut string = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        index += 1;
        if byte != b'\\' {
            string.push(byte);
            continue;
        }
        let digits = bytes
            .get(index..index + 3)
            .filter(|digits| digits.iter().all(u8::is_ascii_digit));
        if let Some(digits) = digits {
            let value = digits
                .iter()
                .fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
            let value =
                u8::try_from(value).map_err(|_| format!("escape \\{value} is above 255"))?;
            string.push(value);
            index += 3;
        } else if let Some(&escaped) = bytes.get(index) {
            string.push(escaped);
            index += 1;
        } else {
            return Err("a backslash ends the text".into());
        }
    }
    if string.len() > 255 {
        return Err(format!(
            "a character-string is {} bytes; at most 255",
            string.len()
        ));
    }
    Ok(string)
}

fn parse_ttl_token(text: &str) -> Option<u32> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    parse_ttl(text).ok()
}

/// A token of an entry, with its byte range in the file text.
struct Token<'t> {
    text: &'t str,
    quoted: bool,
    end: usize,
}

/// One logical line: a record or a directive, possibly spread over lines by parentheses.
struct Entry<'t> {
    line: u32,
    blank_owner: bool,
    tokens: Vec<Token<'t>>,
    /// Byte offset where the entry ends (exclusive), before its newline.
    end: usize,
}

/// Splits master-file text into entries, honouring quotes, escapes, comments and parentheses,
/// and hands each to `each` as it is read (a large zone is never held twice).
fn split_entries<'t>(text: &'t str, mut each: impl FnMut(&Entry<'t>)) -> Result<(), (u32, String)> {
    let bytes = text.as_bytes();
    let mut entry = Entry {
        line: 0,
        blank_owner: false,
        tokens: Vec::new(),
        end: 0,
    };
    let mut index = 0;
    let mut line: u32 = 1;
    while index < bytes.len() {
        let entry_line = line;
        let blank_owner = matches!(bytes[index], b' ' | b'\t');
        let mut tokens = std::mem::take(&mut entry.tokens);
        tokens.clear();
        let mut depth = 0usize;
        let mut open_line = 0;
        let mut end = bytes.len();
        while index < bytes.len() {
            match bytes[index] {
                b'\n' => {
                    line += 1;
                    if depth == 0 {
                        end = index;
                        index += 1;
                        break;
                    }
                    index += 1;
                }
                b';' => {
                    while index < bytes.len() && bytes[index] != b'\n' {
                        index += 1;
                    }
                }
                b' ' | b'\t' | b'\r' => index += 1,
                b'(' => {
                    if depth == 0 {
                        open_line = line;
                    }
                    depth += 1;
                    index += 1;
                }
                b')' => {
                    if depth == 0 {
                        return Err((line, "')' without a matching '('".to_string()));
                    }
                    depth -= 1;
                    index += 1;
                }
                b'"' => {
                    let start_line = line;
                    let start = index + 1;
                    index += 1;
                    loop {
                        match bytes.get(index) {
                            None => {
                                return Err((start_line, "unterminated quoted string".to_string()))
                            }
                            Some(b'\\') => index += 2,
                            Some(b'"') => break,
                            Some(b'\n') => {
                                line += 1;
                                index += 1;
                            }
                            Some(_) => index += 1,
                        }
                    }
                    tokens.push(Token {
                        text: &text[start..index.min(bytes.len())],
                        quoted: true,
                        end: index + 1,
                    });
                    index += 1;
                }
                _ => {
                    let start = index;
                    while index < bytes.len() {
                        match bytes[index] {
                            b'\\' => index += 2,
                            b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b';' | b'"' => break,
                            _ => index += 1,
                        }
                    }
                    let stop = index.min(bytes.len());
                    tokens.push(Token {
                        text: &text[start..stop],
                        quoted: false,
                        end: stop,
                    });
                }
            }
        }
        if depth > 0 {
            return Err((open_line, "'(' is never closed".to_string()));
        }
        entry = Entry {
            line: entry_line,
            blank_owner,
            tokens,
            end: end.min(bytes.len()),
        };
        if !entry.tokens.is_empty() {
            each(&entry);
        }
    }
    Ok(())
}

/// One record type at one owner, while a zone is checked.
struct OwnerType {
    record_type: RecordType,
    /// Where the type first appears.
    line: u32,
    /// Indices of its kept records.
    kept: smallvec::SmallVec<[u32; 1]>,
}

/// Checks what a served zone needs and removes exact duplicates (as BIND and NSD do).
/// Returns the kept records and each one's owner key and index, in canonical order (file
/// order within an owner), which the snapshot builds from.
///
/// Owners are grouped by sorting, not with a map: a zone of millions of names passes
/// through here. Each owner's records are checked in file order, and the problems are
/// reported in file order, so the result is what checking record by record gives.
fn check_zone(
    origin: &Name,
    mut records: Vec<SourcedRecord>,
    path: &Path,
    errors: &mut Vec<ZoneError>,
) -> (Vec<SourcedRecord>, Vec<(NameKey, u32)>) {
    let origin_key = name_key(origin);
    let mut problems: Vec<(usize, String)> = Vec::new();
    let mut owners: Vec<(NameKey, u32)> = Vec::with_capacity(records.len());
    for (position, sourced) in records.iter().enumerate() {
        let key = name_key(&sourced.record.name);
        if !is_within(&key, &origin_key) {
            let message = format!("{} is outside the zone {origin}", sourced.record.name);
            problems.push((position, message));
            continue;
        }
        owners.push((key, position as u32));
    }
    sort_canonical(&mut owners, origin_key.len());

    let mut keep = vec![false; records.len()];
    let mut soa_count = 0;
    let mut apex_has_ns = false;
    let mut start = 0;
    while start < owners.len() {
        let owner = &owners[start].0;
        let end = start
            + owners[start..]
                .iter()
                .position(|(key, _)| key != owner)
                .unwrap_or(owners.len() - start);
        let at_apex = **owner == *origin_key;
        // Each record type here: its first line and the indices of its kept records, to
        // explain conflicts and to drop exact duplicates.
        let mut types: smallvec::SmallVec<[OwnerType; 2]> = smallvec::SmallVec::new();
        for &(_, position) in &owners[start..end] {
            let position = position as usize;
            let sourced = &records[position];
            let record = &sourced.record;
            let mut problem = |message: String| problems.push((position, message));
            let record_type = record.record_type();
            if record_type == RecordType::SOA {
                if !at_apex {
                    problem(format!(
                        "SOA at {} is not at the zone apex {origin}",
                        record.name
                    ));
                    continue;
                }
                soa_count += 1;
                if soa_count > 1 {
                    problem("a second SOA record at the apex".to_string());
                    continue;
                }
            }
            if let Some(same) = types.iter().find(|known| known.record_type == record_type) {
                if same
                    .kept
                    .iter()
                    .any(|&index| records[index as usize].record.data == record.data)
                {
                    continue;
                }
            }
            let cname = types
                .iter()
                .find(|known| known.record_type == RecordType::CNAME);
            if record_type == RecordType::CNAME {
                if let Some(previous) = cname {
                    problem(format!(
                        "a second CNAME at {} (the first is at line {})",
                        record.name, previous.line
                    ));
                    continue;
                }
                if let Some(other) = types
                    .iter()
                    .min_by_key(|known| u16::from(known.record_type))
                {
                    problem(format!(
                        "CNAME and other data at {}: {} at line {} (RFC 1034 §3.6.2)",
                        record.name, other.record_type, other.line
                    ));
                    continue;
                }
            } else if let Some(cname) = cname {
                problem(format!(
                    "CNAME and other data at {}: CNAME at line {} (RFC 1034 §3.6.2)",
                    record.name, cname.line
                ));
                continue;
            }
            match types
                .iter_mut()
                .find(|known| known.record_type == record_type)
            {
                Some(known) => known.kept.push(position as u32),
                None => types.push(OwnerType {
                    record_type,
                    line: sourced.line,
                    kept: smallvec::smallvec![position as u32],
                }),
            }
            keep[position] = true;
        }
        apex_has_ns |= at_apex
            && types
                .iter()
                .any(|known| known.record_type == RecordType::NS);
        start = end;
    }

    problems.sort_by_key(|(position, _)| *position);
    errors.extend(problems.into_iter().map(|(position, message)| ZoneError {
        path: path.to_path_buf(),
        line: Some(records[position].line),
        message,
    }));
    if soa_count == 0 {
        errors.push(ZoneError {
            path: path.to_path_buf(),
            line: None,
            message: format!("no SOA record at the zone apex {origin}"),
        });
    }
    if !apex_has_ns {
        errors.push(ZoneError {
            path: path.to_path_buf(),
            line: None,
            message: format!("no NS records at the zone apex {origin}"),
        });
    }
    // Removed in place, and the owners' indices follow.
    let mut kept_before = 0u32;
    let renumbered: Vec<u32> = keep
        .iter()
        .map(|&kept| {
            let index = if kept { kept_before } else { u32::MAX };
            kept_before += u32::from(kept);
            index
        })
        .collect();
    owners.retain_mut(|(_, index)| {
        *index = renumbered[*index as usize];
        *index != u32::MAX
    });
    let mut keep = keep.into_iter();
    records.retain(|_| keep.next().unwrap_or(false));
    (records, owners)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a file in two halves gives what reading it whole gives, wherever the split
    /// falls: inside parentheses and quotes, before and after directives, between a record
    /// and the blank-owner records that inherit its name, with errors in either half.
    #[test]
    fn reading_in_two_halves_equals_reading_whole() {
        let origin = Name::from_ascii("example.test.").unwrap();
        let path = Path::new("split.zone");
        let text = "$TTL 300\n@ SOA ns h (\n1 3600\n600 86400 60 )\n@ NS ns\nns A 192.0.2.1\n\
            www 60 A 192.0.2.2\n A 192.0.2.3\n\t AAAA 2001:db8::1\n\
            txt TXT \"multi\nline\" \"two\"\n; a comment\n\
            $ORIGIN sub.example.test.\nx A 192.0.2.4\n$TTL 90\ny A 192.0.2.5\n\
            bad A 999.1.1.1\n$ORIGIN example.test.\nz MX 10 mail\nmail A 192.0.2.6\n\
            (\n)\nlast A 192.0.2.7\n";
        let show = |reader: &Reader| -> (Vec<String>, Vec<String>) {
            (
                reader
                    .records
                    .iter()
                    .map(|sourced| format!("{} {}", sourced.line, sourced.record))
                    .collect(),
                reader.errors.iter().map(ToString::to_string).collect(),
            )
        };
        let whole = show(&read_whole(text, path, &origin));
        assert!(
            !whole.1.is_empty(),
            "the file has errors to place: {whole:?}"
        );
        let mut kept = 0;
        for (at, _) in text.match_indices('\n') {
            if at + 1 < text.len() {
                let (reader, halves) = read_in_two(text, path, &origin, at + 1);
                assert_eq!(show(&reader), whole, "split at {at}");
                kept += usize::from(halves);
            }
        }
        assert!(
            kept >= 8,
            "most owner lines split without a second reading: {kept}"
        );
        let stray = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n)\n@ NS ns\nns A 192.0.2.1\n";
        let whole = show(&read_whole(stray, path, &origin));
        for (at, _) in stray.match_indices('\n') {
            assert_eq!(show(&read_in_two(stray, path, &origin, at + 1).0), whole);
        }
        assert_eq!(split_point(&"a A 192.0.2.1\n".repeat(8)), Some(70));
        assert_eq!(split_point("$INCLUDE x\n"), None);
    }

    /// The fast reading of plain names gives what `Name::parse` gives, labels' case included,
    /// and leaves every other form to it.
    #[test]
    fn plain_names_read_as_name_parse_reads_them() {
        let origin = Name::from_ascii("Example.TEST.").unwrap();
        let long = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(40),
        ]
        .join(".");
        let fast = [
            "www",
            "WWW",
            "h123",
            "a-b",
            "a.b.c",
            "Mail.Example.ORG.",
            "x1.",
            "9",
        ];
        let others = [
            "-a",
            "a-",
            "xn--bcher-kva",
            "ab--cd",
            "_sip._tcp",
            "*",
            "*.wild",
            "a\\.b",
            "a..b",
            ".",
            "é",
            "a_b",
            &long,
        ];
        for text in fast.iter().chain(&others) {
            let expected = Name::parse(text, Some(&origin));
            match plain_name(text, &origin) {
                Some(name) => {
                    let expected = expected.unwrap();
                    assert_eq!(name, expected, "{text}");
                    assert_eq!(name.to_string(), expected.to_string(), "{text}");
                    assert!(name.is_fqdn(), "{text}");
                }
                None => assert!(
                    !fast.contains(text),
                    "{text} should be read by the fast path"
                ),
            }
        }
    }

    fn parse(text: &str) -> Result<ZoneData, ZoneErrors> {
        parse_zone(
            text,
            Path::new("test.zone"),
            &Name::from_ascii("example.test.").unwrap(),
        )
    }

    const HEAD: &str = "$TTL 300\n@ IN SOA ns1 hostmaster ( 1 3600 600\n 86400 ; expire\n 60 )\n  NS ns1\nns1 A 192.0.2.1\n";

    /// Owners are checked in canonical order, but problems are reported in file order, and
    /// the kept records keep file order.
    #[test]
    fn zone_problems_are_reported_in_file_order() {
        let text = format!(
            "{HEAD}zz CNAME a\nzz A 192.0.2.9\nb A 192.0.2.2\nb A 192.0.2.2\n\
             b CNAME c\nother.test. A 192.0.2.3\naa A 192.0.2.4\n"
        );
        let errors = parse(&text).unwrap_err().0;
        let lines: Vec<Option<u32>> = errors.iter().map(|error| error.line).collect();
        assert_eq!(lines, [Some(8), Some(11), Some(12)], "{errors:?}");
        let text = format!("{HEAD}zz A 192.0.2.9\nb A 192.0.2.2\nb A 192.0.2.2\naa A 192.0.2.4\n");
        let data = parse(&text).unwrap();
        let lines: Vec<u32> = data.records.iter().map(|sourced| sourced.line).collect();
        assert_eq!(lines, [2, 5, 6, 7, 8, 10]);
        let owners: Vec<u32> = data.owners.iter().map(|(_, index)| *index).collect();
        assert_eq!(
            owners,
            [0, 1, 5, 4, 2, 3],
            "apex, aa, b, ns1, zz in canonical order"
        );
    }

    #[test]
    fn parses_multiline_soa_and_inherited_owner() {
        let zone = parse(HEAD).unwrap();
        assert_eq!(zone.records.len(), 3);
        assert_eq!(zone.records[1].record.record_type(), RecordType::NS);
        assert_eq!(zone.records[1].record.name.to_string(), "example.test.");
        assert_eq!(zone.records[2].line, 6);
    }

    #[test]
    fn txt_spans_lines_with_comments_and_decodes_escapes() {
        let zone = parse(
            "$TTL 1\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nt TXT ( \"a\\\"b\" ; note\n  bare \"caf\\195\\169\" )\ng A \\# 4 ( 0a00\n 0001 )\n",
        )
        .unwrap();
        let RData::TXT(txt) = &zone.records[2].record.data else {
            panic!("a TXT record");
        };
        let strings: Vec<&[u8]> = txt.txt_data.iter().map(|string| &string[..]).collect();
        assert_eq!(strings, [&b"a\"b"[..], b"bare", b"caf\xc3\xa9"]);
        assert_eq!(zone.records[3].record.data.to_string(), "10.0.0.1");
        assert!(parse("$TTL 1\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nt TXT \"\\256\"\n").is_err());
    }

    #[test]
    fn quoted_strings_keep_semicolons_and_spaces() {
        let zone = parse(&format!("{HEAD}txt TXT \"a; b\" \"c\\\"d\"\n")).unwrap();
        let txt = &zone.records[3].record;
        assert_eq!(txt.record_type(), RecordType::TXT);
        let RData::TXT(txt) = &txt.data else { panic!() };
        let strings: Vec<_> = txt.txt_data.iter().map(|s| s.to_vec()).collect();
        assert_eq!(strings, vec![b"a; b".to_vec(), b"c\"d".to_vec()]);
    }

    #[test]
    fn errors_name_the_line() {
        let error = parse(&format!("{HEAD}www A 999.1.1.1\n")).unwrap_err();
        assert_eq!(error.0.len(), 1);
        assert_eq!(error.0[0].line, Some(7), "{error}");
        assert!(error.to_string().starts_with("test.zone:7: bad A record"));
    }

    #[test]
    fn reports_every_error() {
        let text = format!(
            "{HEAD}www A 1.2.3.4\nwww CNAME other\nout.example.org. A 1.1.1.1\nbad BOGUS x\n"
        );
        let error = parse(&text).unwrap_err();
        let lines: Vec<_> = error.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![Some(10), Some(8), Some(9)], "{error}");
        assert!(error.0[1].message.contains("CNAME and other data"));
        assert!(error.0[2].message.contains("outside the zone"));
    }

    #[test]
    fn missing_soa_and_ns_are_zone_errors() {
        let error = parse("$TTL 60\nwww A 192.0.2.1\n").unwrap_err();
        let messages: Vec<_> = error.0.iter().map(|e| e.message.as_str()).collect();
        assert!(messages[0].contains("no SOA"), "{error}");
        assert!(messages[1].contains("no NS"), "{error}");
    }

    #[test]
    fn unclosed_parenthesis_names_where_it_opened() {
        let error = parse("$TTL 60\n@ SOA ns1 h ( 1 2 3 4 5\n").unwrap_err();
        assert_eq!(error.0[0].line, Some(2));
        assert!(error.0[0].message.contains("never closed"));
    }

    #[test]
    fn duplicates_are_dropped_and_ttl_is_inherited() {
        let zone = parse(&format!(
            "{HEAD}a 10 A 192.0.2.9\na A 192.0.2.9\nb A 192.0.2.8\n"
        ))
        .unwrap();
        assert_eq!(zone.records.len(), 5);
        assert_eq!(
            zone.records[4].record.ttl, 300,
            "$TTL wins over the last TTL"
        );
    }
}
