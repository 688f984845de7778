//! A safe subset of Python's pickle format (protocols 2–5), for session dicts.
//!
//! [`decode`] reads what `pickle.dumps` makes of a dict of JSON-like values — `str`,
//! `int`, `float`, `bool`, `None`, `list`, `dict`, `tuple`, `bytes` — and of
//! `datetime.datetime` (naive or UTC). It never imports or calls anything: the only
//! globals it accepts are `datetime.datetime`, `datetime.timezone` and
//! `datetime.timedelta`, and only in the exact shapes `pickle` gives those values,
//! which are interpreted here, not called. Every other opcode (`BUILD`, `NEWOBJ`,
//! `INST`, `OBJ`, extensions, persistent ids, sets, any other global) is refused with
//! a [`DecodeError`]. Every length is checked against the input, nesting is capped at
//! [`MAX_DEPTH`], and the value a pickle expands to (shared references are copied)
//! is capped at [`MAX_NODES`] values and at [`MAX_EXPANSION`] times the input's
//! size in decoded bytes, so a small input cannot make a large output: a string
//! memoized once and referenced many times is refused once its copies pass that
//! size, before they are made.
//!
//! [`encode`] writes protocol 5 that Python's `pickle.loads` reads back equal.

use super::{DecodeError, Input};
use super::value::{DateTime, MAX_DEPTH, PyValue};

/// The most values one pickle may expand to.
pub const MAX_NODES: usize = 1 << 20;

/// The decoded size a pickle may reach, as a multiple of its own size (with a
/// floor of 64 KiB for small inputs). A value counts 8 bytes plus the bytes of its
/// str or bytes payload, so copies of a memoized string count in full.
pub const MAX_EXPANSION: usize = 16;

/// What `build` may still produce.
struct Budget {
    nodes: usize,
    bytes: usize,
}

impl Budget {
    fn for_input(len: usize) -> Budget {
        Budget {
            nodes: MAX_NODES,
            bytes: len.saturating_mul(MAX_EXPANSION).max(64 * 1024),
        }
    }

    fn spend(&mut self, payload: usize) -> Result<(), DecodeError> {
        self.nodes = self
            .nodes
            .checked_sub(1)
            .ok_or_else(|| DecodeError::new(format!("expands to more than {MAX_NODES} values")))?;
        self.bytes = self
            .bytes
            .checked_sub(payload.saturating_add(8))
            .ok_or_else(|| {
                DecodeError::new(format!(
                    "expands to more than {MAX_EXPANSION} times its size (shared references \
                     are copied)"
                ))
            })?;
        Ok(())
    }
}

/// A value under construction: containers stay mutable (Python's memo holds
/// references, and a memoized dict is filled after it is memoized).
#[derive(Debug)]
enum Node {
    Scalar(PyValue),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(Global),
    /// `datetime.timezone.utc`.
    Utc,
    /// `datetime.timedelta(days, seconds, microseconds)`.
    TimeDelta(i128, i128, i128),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    DateTime,
    TimeZone,
    TimeDelta,
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Mark,
    Obj(usize),
}

/// Pickle's integers and lengths are little-endian.
const LE: bool = true;

struct Machine<'a> {
    r: Input<'a>,
    nodes: Vec<Node>,
    stack: Vec<Slot>,
    memo: std::collections::HashMap<u64, usize>,
}

impl Machine<'_> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, DecodeError> {
        Err(DecodeError::at(what, self.r.pos))
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(Slot::Obj(self.nodes.len() - 1));
    }

    fn pop(&mut self) -> Result<usize, DecodeError> {
        match self.stack.pop() {
            Some(Slot::Obj(i)) => Ok(i),
            Some(Slot::Mark) => self.fail("a value was expected, a mark was found"),
            None => self.fail("the stack is empty"),
        }
    }

    fn top(&self) -> Result<usize, DecodeError> {
        match self.stack.last() {
            Some(Slot::Obj(i)) => Ok(*i),
            _ => self.fail("a value was expected on the stack"),
        }
    }

    /// The values above the topmost mark (which is removed).
    fn pop_mark(&mut self) -> Result<Vec<usize>, DecodeError> {
        let Some(at) = self.stack.iter().rposition(|s| matches!(s, Slot::Mark)) else {
            return self.fail("no mark on the stack");
        };
        let items = self.stack[at + 1..]
            .iter()
            .map(|s| match s {
                Slot::Obj(i) => *i,
                Slot::Mark => unreachable!("rposition found the topmost mark"),
            })
            .collect();
        self.stack.truncate(at);
        Ok(items)
    }

    fn string(&mut self, n: usize) -> Result<(), DecodeError> {
        let bytes = self.r.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                self.push(Node::Scalar(PyValue::Str(s.to_owned())));
                Ok(())
            }
            Err(_) => self.fail("a str is not valid UTF-8"),
        }
    }

    fn bytes(&mut self, n: usize) -> Result<(), DecodeError> {
        let bytes = self.r.take(n)?.to_vec();
        self.push(Node::Scalar(PyValue::Bytes(bytes)));
        Ok(())
    }

    fn int(&mut self, n: usize) -> Result<(), DecodeError> {
        let b = self.r.take(n)?;
        if b.len() > 16 {
            return self.fail("an int of more than 128 bits");
        }
        let mut v: i128 = 0;
        for (i, &x) in b.iter().enumerate() {
            v |= i128::from(x) << (8 * i);
        }
        // Two's complement of n bytes: sign-extend.
        if let Some(&last) = b.last()
            && last & 0x80 != 0
            && b.len() < 16
        {
            v -= 1i128 << (8 * b.len());
        }
        self.push(Node::Scalar(PyValue::Int(v)));
        Ok(())
    }

    fn list_mut(&mut self, at: usize) -> Result<&mut Vec<usize>, DecodeError> {
        let pos = self.r.pos;
        match &mut self.nodes[at] {
            Node::List(items) => Ok(items),
            _ => Err(DecodeError::at("appending to something that is not a list", pos)),
        }
    }

    fn dict_mut(&mut self, at: usize) -> Result<&mut Vec<(usize, usize)>, DecodeError> {
        let pos = self.r.pos;
        match &mut self.nodes[at] {
            Node::Dict(items) => Ok(items),
            _ => Err(DecodeError::at("setting an item of something that is not a dict", pos)),
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), DecodeError> {
        let g = match (module, name) {
            ("datetime", "datetime") => Global::DateTime,
            ("datetime", "timezone") => Global::TimeZone,
            ("datetime", "timedelta") => Global::TimeDelta,
            _ => {
                return self.fail(format!(
                    "the pickle refers to the Python global {module}.{name}; only plain \
                     data (and datetime) is read, nothing is imported or called"
                ));
            }
        };
        self.push(Node::Global(g));
        Ok(())
    }

    fn reduce(&mut self) -> Result<(), DecodeError> {
        let args = self.pop()?;
        let callable = self.pop()?;
        let Node::Global(g) = self.nodes[callable] else {
            return self.fail("REDUCE of something that is not an accepted global");
        };
        let Node::Tuple(args) = &self.nodes[args] else {
            return self.fail("REDUCE arguments are not a tuple");
        };
        let args: Vec<&Node> = args.iter().map(|&i| &self.nodes[i]).collect();
        let int = |n: &Node| match n {
            Node::Scalar(PyValue::Int(i)) => Some(*i),
            _ => None,
        };
        let node = match (g, args.as_slice()) {
            (Global::TimeDelta, [d, s, us]) => match (int(d), int(s), int(us)) {
                (Some(d), Some(s), Some(us)) => Node::TimeDelta(d, s, us),
                _ => return self.fail("timedelta arguments are not ints"),
            },
            (Global::TimeZone, [Node::TimeDelta(0, 0, 0)]) => Node::Utc,
            (Global::TimeZone, _) => {
                return self.fail("a time zone other than UTC (only naive and UTC datetimes are read)");
            }
            (Global::DateTime, [Node::Scalar(PyValue::Bytes(b))]) => {
                Node::Scalar(PyValue::DateTime(self.datetime(b, false)?))
            }
            (Global::DateTime, [Node::Scalar(PyValue::Bytes(b)), Node::Utc]) => {
                Node::Scalar(PyValue::DateTime(self.datetime(b, true)?))
            }
            _ => return self.fail("REDUCE with arguments of an unknown shape"),
        };
        self.push(node);
        Ok(())
    }

    fn datetime(&self, b: &[u8], utc: bool) -> Result<DateTime, DecodeError> {
        if b.len() != 10 {
            return self.fail("datetime state is not 10 bytes");
        }
        let dt = DateTime {
            year: u16::from(b[0]) << 8 | u16::from(b[1]),
            // Python sets the high bit of the month for the second of a repeated hour
            // (`fold`); it does not change the value.
            month: b[2] & 0x7f,
            day: b[3],
            hour: b[4],
            minute: b[5],
            second: b[6],
            microsecond: u32::from(b[7]) << 16 | u32::from(b[8]) << 8 | u32::from(b[9]),
            utc,
        };
        if !dt.is_valid() {
            return self.fail("datetime state is not a valid date and time");
        }
        Ok(dt)
    }

    fn run(&mut self) -> Result<usize, DecodeError> {
        loop {
            let op = self.r.take(1)?[0];
            match op {
                0x80 => {
                    // PROTO
                    let v = self.r.take(1)?[0];
                    if v > 5 {
                        return self.fail(format!("pickle protocol {v} is newer than 5"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint; the opcodes follow inline.
                    self.r.take(8)?;
                }
                b'.' => {
                    // STOP
                    let root = self.pop()?;
                    if !self.stack.is_empty() {
                        return self.fail("values left on the stack at STOP");
                    }
                    if self.r.pos != self.r.data.len() {
                        return self.fail("data after STOP");
                    }
                    return Ok(root);
                }
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack
                        .pop()
                        .ok_or_else(|| DecodeError::at("POP of an empty stack", self.r.pos))?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?;
                    self.stack.push(Slot::Obj(top));
                }
                b'N' => self.push(Node::Scalar(PyValue::None)),
                0x88 => self.push(Node::Scalar(PyValue::Bool(true))),
                0x89 => self.push(Node::Scalar(PyValue::Bool(false))),
                b'K' => {
                    let v = self.r.take(1)?[0];
                    self.push(Node::Scalar(PyValue::Int(v.into())));
                }
                b'M' => {
                    let v = self.r.uint(2, LE)?;
                    self.push(Node::Scalar(PyValue::Int(v.into())));
                }
                b'J' => {
                    let v = self.r.uint(4, LE)? as u32 as i32;
                    self.push(Node::Scalar(PyValue::Int(v.into())));
                }
                0x8a => {
                    // LONG1
                    let n = self.r.len(1, LE)?;
                    self.int(n)?;
                }
                0x8b => {
                    // LONG4
                    let n = self.r.len(4, LE)?;
                    self.int(n)?;
                }
                b'G' => {
                    let b = self.r.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.push(Node::Scalar(PyValue::Float(v)));
                }
                0x8c => {
                    let n = self.r.len(1, LE)?;
                    self.string(n)?;
                }
                b'X' => {
                    let n = self.r.len(4, LE)?;
                    self.string(n)?;
                }
                0x8d => {
                    let n = self.r.len(8, LE)?;
                    self.string(n)?;
                }
                b'C' => {
                    let n = self.r.len(1, LE)?;
                    self.bytes(n)?;
                }
                b'B' => {
                    let n = self.r.len(4, LE)?;
                    self.bytes(n)?;
                }
                0x8e => {
                    let n = self.r.len(8, LE)?;
                    self.bytes(n)?;
                }
                b']' => self.push(Node::List(Vec::new())),
                b'}' => self.push(Node::Dict(Vec::new())),
                b')' => self.push(Node::Tuple(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.fail("DICT with an odd number of items");
                    }
                    let pairs = items.chunks(2).map(|c| (c[0], c[1])).collect();
                    self.push(Node::Dict(pairs));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return self.fail("TUPLE of more values than the stack holds");
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Node::Tuple(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    let list = self.top()?;
                    self.list_mut(list)?.push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.list_mut(list)?.extend(items);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top()?;
                    self.dict_mut(dict)?.push((k, v));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return self.fail("SETITEMS with an odd number of items");
                    }
                    let dict = self.top()?;
                    self.dict_mut(dict)?
                        .extend(items.chunks(2).map(|c| (c[0], c[1])));
                }
                0x94 => {
                    // MEMOIZE
                    let top = self.top()?;
                    let key = self.memo.len() as u64;
                    self.memo.insert(key, top);
                }
                b'q' | b'r' => {
                    // BINPUT, LONG_BINPUT
                    let key = self.r.uint(if op == b'q' { 1 } else { 4 }, LE)?;
                    let top = self.top()?;
                    self.memo.insert(key, top);
                }
                b'h' | b'j' => {
                    // BINGET, LONG_BINGET
                    let key = self.r.uint(if op == b'h' { 1 } else { 4 }, LE)?;
                    match self.memo.get(&key) {
                        Some(&i) => self.stack.push(Slot::Obj(i)),
                        None => return self.fail(format!("memo entry {key} was never stored")),
                    }
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&self.nodes[module], &self.nodes[name]) {
                        (Node::Scalar(PyValue::Str(m)), Node::Scalar(PyValue::Str(n))) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.global(&m, &n)?;
                        }
                        _ => return self.fail("STACK_GLOBAL of values that are not strs"),
                    }
                }
                b'c' => {
                    // GLOBAL "module\nname\n"
                    let mut line = || -> Result<String, DecodeError> {
                        let rest = &self.r.data[self.r.pos..];
                        let end = rest
                            .iter()
                            .position(|&b| b == b'\n')
                            .ok_or_else(|| DecodeError::at("GLOBAL without a newline", self.r.pos))?;
                        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
                        self.r.pos += end + 1;
                        Ok(s)
                    };
                    let (m, n) = (line()?, line()?);
                    self.global(&m, &n)?;
                }
                b'R' => self.reduce()?,
                other => {
                    return self.fail(format!(
                        "opcode 0x{other:02x} ({}) is not read: it is not part of a pickled \
                         session dict of plain data",
                        opcode_name(other)
                    ));
                }
            }
        }
    }

    /// The finished value of node `at`, with shared references copied.
    fn build(&self, at: usize, depth: usize, budget: &mut Budget) -> Result<PyValue, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::new(format!(
                "nested more than {MAX_DEPTH} levels deep (or refers to itself)"
            )));
        }
        // Spent before the copy is made: a bomb is refused without its memory.
        budget.spend(match &self.nodes[at] {
            Node::Scalar(PyValue::Str(s)) => s.len(),
            Node::Scalar(PyValue::Bytes(b)) => b.len(),
            _ => 0,
        })?;
        let many = |items: &[usize], budget: &mut Budget| {
            items
                .iter()
                .map(|&i| self.build(i, depth + 1, budget))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(match &self.nodes[at] {
            Node::Scalar(v) => v.clone(),
            Node::List(items) => PyValue::List(many(items, budget)?),
            Node::Tuple(items) => PyValue::Tuple(many(items, budget)?),
            Node::Dict(pairs) => {
                let mut out = Vec::with_capacity(pairs.len());
                for &(k, v) in pairs {
                    out.push((
                        self.build(k, depth + 1, budget)?,
                        self.build(v, depth + 1, budget)?,
                    ));
                }
                PyValue::Dict(out)
            }
            Node::Global(_) | Node::Utc | Node::TimeDelta(..) => {
                return Err(DecodeError::new(
                    "a datetime helper (timezone, timedelta) stands alone as a value",
                ));
            }
        })
    }
}

fn opcode_name(op: u8) -> &'static str {
    match op {
        b'b' => "BUILD",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        b'i' => "INST",
        b'o' => "OBJ",
        b'P' | b'Q' => "PERSID",
        0x82..=0x84 => "EXT",
        0x8f..=0x91 => "set opcodes",
        0x96 => "BYTEARRAY8",
        0x97 | 0x98 => "out-of-band buffer",
        b'I' | b'L' | b'F' | b'S' | b'V' | b'T' | b'U' | b'p' | b'g' => {
            "a protocol 0/1 text opcode"
        }
        _ => "unknown",
    }
}

/// Decodes a pickle of plain data (see the [module docs](self)).
///
/// # Errors
/// [`DecodeError`] naming the first thing that is not plain data, or the damage.
pub fn decode(data: &[u8]) -> Result<PyValue, DecodeError> {
    let mut m = Machine {
        r: Input::new(data),
        nodes: Vec::new(),
        stack: Vec::new(),
        memo: std::collections::HashMap::new(),
    };
    let root = m.run()?;
    let mut budget = Budget::for_input(data.len());
    m.build(root, 0, &mut budget)
}

/// Encodes `value` as a protocol-5 pickle that `pickle.loads` reads back equal.
///
/// # Errors
/// Nesting deeper than [`MAX_DEPTH`], or a datetime that is not a
/// valid date.
pub fn encode(value: &PyValue) -> Result<Vec<u8>, DecodeError> {
    let mut out = vec![0x80, 5];
    write(value, &mut out, 0)?;
    out.push(b'.');
    Ok(out)
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    let b = s.as_bytes();
    if b.len() < 256 {
        out.push(0x8c);
        out.push(b.len() as u8);
    } else if let Ok(n) = u32::try_from(b.len()) {
        out.push(b'X');
        out.extend_from_slice(&n.to_le_bytes());
    } else {
        out.push(0x8d);
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    }
    out.extend_from_slice(b);
}

fn write(value: &PyValue, out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(format!("nested more than {MAX_DEPTH} levels deep")));
    }
    match value {
        PyValue::None => out.push(b'N'),
        PyValue::Bool(true) => out.push(0x88),
        PyValue::Bool(false) => out.push(0x89),
        PyValue::Int(i) => {
            if let Ok(v) = u8::try_from(*i) {
                out.extend_from_slice(&[b'K', v]);
            } else if let Ok(v) = u16::try_from(*i) {
                out.push(b'M');
                out.extend_from_slice(&v.to_le_bytes());
            } else if let Ok(v) = i32::try_from(*i) {
                out.push(b'J');
                out.extend_from_slice(&v.to_le_bytes());
            } else {
                // LONG1: the shortest little-endian two's complement.
                let bytes = i.to_le_bytes();
                let mut n = 16;
                while n > 1 {
                    let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                    let redundant = (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0);
                    if !redundant {
                        break;
                    }
                    n -= 1;
                }
                out.extend_from_slice(&[0x8a, n as u8]);
                out.extend_from_slice(&bytes[..n]);
            }
        }
        PyValue::Float(f) => {
            out.push(b'G');
            out.extend_from_slice(&f.to_be_bytes());
        }
        PyValue::Str(s) => write_str(s, out),
        PyValue::Bytes(b) => {
            if b.len() < 256 {
                out.extend_from_slice(&[b'C', b.len() as u8]);
            } else if let Ok(n) = u32::try_from(b.len()) {
                out.push(b'B');
                out.extend_from_slice(&n.to_le_bytes());
            } else {
                out.push(0x8e);
                out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            }
            out.extend_from_slice(b);
        }
        PyValue::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for v in items {
                    write(v, out, depth + 1)?;
                }
                out.push(b'e');
            }
        }
        PyValue::Tuple(items) => match items.len() {
            0 => out.push(b')'),
            n @ 1..=3 => {
                for v in items {
                    write(v, out, depth + 1)?;
                }
                out.push(0x84 + n as u8);
            }
            _ => {
                out.push(b'(');
                for v in items {
                    write(v, out, depth + 1)?;
                }
                out.push(b't');
            }
        },
        PyValue::Dict(pairs) => {
            out.push(b'}');
            if !pairs.is_empty() {
                out.push(b'(');
                for (k, v) in pairs {
                    write(k, out, depth + 1)?;
                    write(v, out, depth + 1)?;
                }
                out.push(b'u');
            }
        }
        PyValue::DateTime(dt) => {
            if !dt.is_valid() {
                return Err(DecodeError::new(format!("{dt:?} is not a valid datetime")));
            }
            let global = |name: &str, out: &mut Vec<u8>| {
                write_str("datetime", out);
                write_str(name, out);
                out.push(0x93);
            };
            global("datetime", out);
            let us = dt.microsecond;
            out.extend_from_slice(&[
                b'C',
                10,
                (dt.year >> 8) as u8,
                dt.year as u8,
                dt.month,
                dt.day,
                dt.hour,
                dt.minute,
                dt.second,
                (us >> 16) as u8,
                (us >> 8) as u8,
                us as u8,
            ]);
            if dt.utc {
                // datetime.timezone(datetime.timedelta(0, 0, 0)), as pickle writes utc.
                global("timezone", out);
                global("timedelta", out);
                out.extend_from_slice(&[b'K', 0, b'K', 0, b'K', 0, 0x87, b'R', 0x85, b'R', 0x86]);
            } else {
                out.push(0x85);
            }
            out.push(b'R');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps({'_permanent': True, 'user': 'ann', 'cart': {'apple': 2},
    /// 'n': 1 << 40, 'f': 1.5, 't': (1, 'a'), 'b': b'\x00\x01', 'none': None,
    /// 'l': [True, False]}, 5)` from CPython 3.11.
    const GOLDEN: &[u8] = b"\x80\x05\x95t\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\n_permanent\x94\x88\x8c\x04user\x94\x8c\x03ann\x94\x8c\x04cart\x94}\x94\x8c\x05apple\x94K\x02s\x8c\x01n\x94\x8a\x06\x00\x00\x00\x00\x00\x01\x8c\x01f\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01t\x94K\x01\x8c\x01a\x94\x86\x94\x8c\x01b\x94C\x02\x00\x01\x94\x8c\x04none\x94N\x8c\x01l\x94]\x94(\x88\x89eu.";

    /// `pickle.dumps({'d': dt, 'u': dt.replace(tzinfo=timezone.utc)}, 5)` with
    /// `dt = datetime(2026, 12, 4, 6, 41, 47, 123456)`.
    const GOLDEN_DATES: &[u8] = b"\x80\x05\x95v\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01d\x94\x8c\x08datetime\x94\x8c\x08datetime\x94\x93\x94C\n\x07\xea\x0c\x04\x06)/\x01\xe2@\x94\x85\x94R\x94\x8c\x01u\x94h\x04C\n\x07\xea\x0c\x04\x06)/\x01\xe2@\x94h\x02\x8c\x08timezone\x94\x93\x94h\x02\x8c\ttimedelta\x94\x93\x94K\x00K\x00K\x00\x87\x94R\x94\x85\x94R\x94\x86\x94R\x94u.";

    fn s(v: &str) -> PyValue {
        PyValue::Str(v.into())
    }

    #[test]
    fn reads_what_cpython_writes() {
        let v = decode(GOLDEN).unwrap();
        let expected = PyValue::Dict(vec![
            (s("_permanent"), PyValue::Bool(true)),
            (s("user"), s("ann")),
            (s("cart"), PyValue::Dict(vec![(s("apple"), PyValue::Int(2))])),
            (s("n"), PyValue::Int(1 << 40)),
            (s("f"), PyValue::Float(1.5)),
            (s("t"), PyValue::Tuple(vec![PyValue::Int(1), s("a")])),
            (s("b"), PyValue::Bytes(vec![0, 1])),
            (s("none"), PyValue::None),
            (s("l"), PyValue::List(vec![PyValue::Bool(true), PyValue::Bool(false)])),
        ]);
        assert_eq!(v, expected);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v);
        let dates = decode(GOLDEN_DATES).unwrap();
        let PyValue::Dict(pairs) = &dates else { panic!() };
        let PyValue::DateTime(d) = pairs[0].1 else { panic!() };
        let PyValue::DateTime(u) = pairs[1].1 else { panic!() };
        assert_eq!(d.to_rfc3339(), "2026-12-04T06:41:47.123456");
        assert_eq!(u.to_rfc3339(), "2026-12-04T06:41:47.123456Z");
        assert_eq!(decode(&encode(&dates).unwrap()).unwrap(), dates);
    }

    #[test]
    fn a_memoized_dict_filled_later_is_shared_filled() {
        // d = {}; pickle.dumps([d, d]) after d['k'] = 1 is filled before the second
        // reference; here the memo is taken while empty and filled afterwards.
        let p = b"\x80\x05](}\x94\x8c\x01kK\x01sh\x00e.";
        let v = decode(p).unwrap();
        let one = PyValue::Dict(vec![(s("k"), PyValue::Int(1))]);
        assert_eq!(v, PyValue::List(vec![one.clone(), one]));
    }

    #[test]
    fn refuses_code_and_bombs() {
        // CPython's pickle of an object whose __reduce__ is (os.system, ('id',)):
        // refused at the global, nothing is called.
        let evil = b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94.";
        let e = decode(evil).unwrap_err();
        assert!(e.to_string().contains("posix.system"), "{e}");
        // BUILD, NEWOBJ: refused by name.
        assert!(decode(b"\x80\x05}b.").unwrap_err().to_string().contains("BUILD"));
        // A billion laughs: each list holds the previous one twice.
        let mut p = vec![0x80, 5, b']', 0x94];
        for i in 0..40u8 {
            p.extend_from_slice(&[b']', b'(', b'h', i, b'h', i, b'e', 0x94]);
        }
        p.push(b'.');
        // The stack still holds every level: drop all but the last with POP.
        let e = decode(&p).unwrap_err();
        assert!(e.to_string().contains("left on the stack") || e.to_string().contains("expands"), "{e}");
        let mut p = vec![0x80, 5, b']', 0x94, b'0'];
        for i in 0..40u8 {
            p.extend_from_slice(&[b']', b'(', b'h', i, b'h', i, b'e', 0x94, b'0']);
        }
        p.push(b'h');
        p.push(40);
        p.push(b'.');
        let e = decode(&p[..]).unwrap_err();
        assert!(e.to_string().contains("expands to more than"), "{e}");
        // Deep nesting.
        let p = [&[0x80, 5][..], &[b']'; 200], &[b'a'; 199], b"."].concat();
        assert!(decode(&p).unwrap_err().to_string().contains("levels deep"));
        // Lengths beyond the input.
        assert!(decode(b"\x80\x05X\xff\xff\xff\xff").is_err());
        assert!(decode(b"\x80\x05\x8d\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        // Truncated, trailing data, empty.
        assert!(decode(&GOLDEN[..GOLDEN.len() - 1]).is_err());
        assert!(decode(b"").is_err());
        assert!(decode(b"\x80\x05N.x").is_err());
    }

    #[test]
    fn ints_of_every_width_round_trip() {
        for i in [
            0i128,
            1,
            255,
            256,
            65535,
            65536,
            -1,
            -128,
            -129,
            i32::MIN.into(),
            i32::MAX.into(),
            i64::MIN.into(),
            i64::MAX.into(),
            u64::MAX.into(),
            i128::MAX,
            i128::MIN,
        ] {
            let v = PyValue::Int(i);
            assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v, "{i}");
        }
    }
}
