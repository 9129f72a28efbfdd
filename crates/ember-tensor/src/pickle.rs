//! The subset of Python's pickle that `torch.save` writes for a state dict, interpreted without
//! executing anything.
//!
//! A state dict pickles as an `OrderedDict` (or a plain dict) of tensors, each tensor as a call
//! of `torch._utils._rebuild_tensor_v2` on a *persistent id* that names a storage of the zip
//! archive:
//!
//! ```text
//! OrderedDict() ← SETITEMS { "name": _rebuild_tensor_v2(
//!         BINPERSID ("storage", torch.FloatStorage, "<key>", "cpu", numel),
//!         storage_offset, (size…), (stride…), requires_grad, OrderedDict() [, metadata]) … }
//!   ← BUILD { "_metadata": … }           (nn.Module version info, ignored)
//! ```
//!
//! Python's unpickler can call any importable function; this one knows a fixed allow-list of
//! globals ([`Global`]) and *applies* them itself, as plain Rust: `OrderedDict()` makes an empty
//! dict, `_rebuild_tensor_v2(…)` records a [`TensorRecord`], `torch.*Storage` only tags a
//! persistent id with its dtype. Any other global, and any opcode outside the list in
//! [`Unpickler::step`] (`INST`, `OBJ`, `NEWOBJ`, `EXT*`, `PERSID`, …), is refused with its byte
//! offset. Nothing is imported, called or executed.
//!
//! Objects live in one arena and refer to each other by index, so the memo and containers share
//! objects without reference counting: cycles built by a hostile pickle cannot leak, dropping is
//! flat (no recursion however deep the nesting), and no opcode copies a string or a tuple it only
//! refers to (a storage keeps its key's index, a tensor its size and stride tuples' indices).
//!
//! Memory is capped, not merely proportional to the pickle: most opcodes are one byte, and each
//! keeps 16 to 40 bytes (a stack slot, an arena slot, a memo entry), so a few megabytes of `]`
//! would otherwise grow the arena past a gigabyte. What the interpreter holds is counted
//! ([`MAX_HELD`] objects, container items and memo entries together; [`MAX_STACK`] stack values
//! and as many open MARKs; [`MAX_TENSORS`] tensors in the result) and a pickle that needs more is
//! refused as malformed. A real state dict holds about 35 values per tensor (BERT-large: ~400
//! tensors, ~14,000), so the caps are generous by almost two orders of magnitude while keeping
//! every buffer under 64 MiB and the whole parse under about 150 MiB, whatever the input.
//!
//! The output ([`StateDict`]) is raw: tensors are validated against their storages by the caller,
//! which knows the archive (see `torch.rs`).

use std::collections::HashMap;

/// Why a pickle was refused, at which byte offset of the pickle.
#[derive(Debug)]
pub(crate) struct PickleError {
    pub offset: usize,
    pub fault: PickleFault,
}

#[derive(Debug)]
pub(crate) enum PickleFault {
    /// An opcode outside the supported subset.
    Opcode { code: u8 },
    /// A global not on the allow-list.
    Global { module: String, name: String },
    /// Anything else: truncation, stack underflow, memo miss, wrong argument types…
    Malformed(String),
}

/// Torch storage classes: the dtype name (safetensors spelling) and element size in bytes.
/// F32, F16 and BF16 are read; the others are recognised so that their tensors (e.g. BERT's int64
/// `embeddings.position_ids`) can be kept aside with a clear "unsupported dtype" instead of
/// failing the whole file.
const STORAGE_CLASSES: [(&str, &str, usize); 10] = [
    ("FloatStorage", "F32", 4),
    ("HalfStorage", "F16", 2),
    ("BFloat16Storage", "BF16", 2),
    ("DoubleStorage", "F64", 8),
    ("LongStorage", "I64", 8),
    ("IntStorage", "I32", 4),
    ("ShortStorage", "I16", 2),
    ("CharStorage", "I8", 1),
    ("ByteStorage", "U8", 1),
    ("BoolStorage", "BOOL", 1),
];

/// A storage class from [`STORAGE_CLASSES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StorageClass {
    /// Safetensors spelling of the dtype (`"F32"`, `"I64"`, …).
    pub dtype: &'static str,
    /// Bytes per element.
    pub element_size: usize,
}

/// The globals a state-dict pickle may name; everything else is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Global {
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_tensor` (older torch).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter` (an `nn.Parameter` wrapping a tensor).
    RebuildParameter,
    /// `torch.<X>Storage`: only valid inside a persistent id.
    Storage(StorageClass),
}

impl Global {
    fn resolve(module: &str, name: &str) -> Option<Global> {
        match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", class) => STORAGE_CLASSES.iter().find(|(c, _, _)| *c == class).map(
                |&(_, dtype, element_size)| {
                    Global::Storage(StorageClass {
                        dtype,
                        element_size,
                    })
                },
            ),
            _ => None,
        }
    }
}

/// A storage named by a persistent id: `("storage", class, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRecord {
    pub class: StorageClass,
    /// The storage's entry is `<archive>/data/<key>`.
    pub key: String,
    /// Elements, as the pickle declares them (checked against the entry by the caller).
    pub numel: i64,
}

/// A tensor as `_rebuild_tensor_v2` describes it, unvalidated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRecord {
    /// Index into [`StateDict::storages`].
    pub storage: usize,
    pub storage_offset: i64,
    pub shape: Vec<i64>,
    pub stride: Vec<i64>,
}

/// The tensors of a state dict, in pickle order; names are unique (a later `SETITEM` of the same
/// name wins, as in Python).
#[derive(Debug, Default)]
pub(crate) struct StateDict {
    pub storages: Vec<StorageRecord>,
    pub tensors: Vec<(String, TensorRecord)>,
}

/// More dimensions than any real tensor has (torch itself stops at 64): refused, so that a tensor
/// copied per dict entry stays small.
pub(crate) const MAX_DIMS: usize = 16;

/// Arena objects, the items of every tuple, list and dict (a dict pair counts two) and memo
/// entries, counted together: about 35 per tensor in a `torch.save` state dict (tiny-bert's 40
/// tensors: 1,396), so 2^20 is room for some 30,000 tensors (BERT-large has ~400). At the cap
/// the arena (at most 32-byte slots) is 32 MiB and the memo's table about 50 MiB, each under the
/// 64 MiB a hostile folder may ask for at once; uncapped, a 10 MB pickle of `]` asked for 1 GiB.
pub(crate) const MAX_HELD: usize = 1 << 20;

/// Values on the stack, and open MARKs, each: a state dict's stack is a few values deep plus one
/// per dict entry of a pending SETITEMS (torch.save batches them 1,000 at a time). 16 MiB of
/// values, 8 MiB of marks at the cap.
pub(crate) const MAX_STACK: usize = 1 << 20;

/// Tensors in one state dict: BERT-large has ~400, the largest single-file checkpoints a few
/// thousand. Each result entry is ~90 bytes plus its name and dims: 2^16 of them stay under
/// 40 MiB, where the [`MAX_HELD`] dict pairs naming one memoised tensor would allow eight times
/// as many.
pub(crate) const MAX_TENSORS: usize = 1 << 16;

/// A pickle value: scalars inline, everything else an index into the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Obj(usize),
}

/// An object of the arena. The rare large variants are boxed so that a slot stays 32 bytes
/// (the size [`MAX_HELD`]'s budget assumes; a unit test checks it).
#[derive(Debug)]
enum Object {
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Pairs in insertion order, repeated keys included: where a key occurs more than once, its
    /// last value counts, as in Python (see [`Unpickler::state_dict`]).
    Dict(Vec<(Value, Value)>),
    Global(Global),
    /// A storage object from `BINPERSID` (not yet resolved against the archive).
    Storage(Box<StorageObject>),
    Tensor(Box<TensorObject>),
}

/// A persistent id's storage, its key left in the arena: a memoised id named by many
/// `BINPERSID`s (3 bytes each) must not copy a long key each time.
#[derive(Debug)]
struct StorageObject {
    class: StorageClass,
    /// Arena index of the key, a [`Object::Str`].
    key: usize,
    numel: i64,
}

/// A `_rebuild_tensor_v2` result, its size and stride left in the arena: a memoised argument
/// tuple rebuilt by many `REDUCE`s (5 bytes each) must not copy 2 × 16 dims each time.
#[derive(Debug)]
struct TensorObject {
    /// Arena index of the [`Object::Storage`].
    storage: usize,
    storage_offset: i64,
    /// Arena indices of the size and stride tuples, checked to be at most [`MAX_DIMS`] ints
    /// of equal length.
    shape: usize,
    stride: usize,
}

impl Object {
    fn kind(&self) -> &'static str {
        match self {
            Object::Str(_) => "str",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Global(_) => "global",
            Object::Storage(_) => "storage",
            Object::Tensor(_) => "tensor",
        }
    }

    /// Values it holds besides itself, for the [`MAX_HELD`] count.
    fn items(&self) -> usize {
        match self {
            Object::Tuple(items) | Object::List(items) => items.len(),
            Object::Dict(pairs) => 2 * pairs.len(),
            _ => 0,
        }
    }
}

/// The pickle opcodes (all protocols), for messages.
fn opcode_name(code: u8) -> &'static str {
    match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "not a pickle opcode",
    }
}

/// Human-readable opcode: `INST (0x69)`.
pub(crate) fn describe_opcode(code: u8) -> String {
    format!("{} (0x{code:02x})", opcode_name(code))
}

/// Interprets `pickle` and returns the state dict it describes: the top-level dict, or its
/// `"state_dict"` entry when that is a dict (training checkpoints wrap it so). Entries whose value
/// is not a tensor (or whose key is not a string) are skipped.
pub(crate) fn load_state_dict(pickle: &[u8]) -> Result<StateDict, PickleError> {
    let mut unpickler = Unpickler {
        data: pickle,
        pos: 0,
        op_start: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        arena: Vec::new(),
        held: 0,
    };
    let top = loop {
        if let Some(result) = unpickler.step()? {
            break result;
        }
    };
    unpickler.state_dict(top)
}

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for messages.
    op_start: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    arena: Vec<Object>,
    /// Arena objects, container items and memo entries so far (see [`MAX_HELD`]).
    held: usize,
}

impl<'a> Unpickler<'a> {
    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError {
            offset: self.op_start,
            fault: PickleFault::Malformed(reason.into()),
        }
    }

    /// The name of the opcode being run.
    fn op_name(&self) -> &'static str {
        self.data
            .get(self.op_start)
            .map_or("?", |&code| opcode_name(code))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                self.malformed(format!(
                    "truncated: {} needs {n} more bytes, {} are left",
                    self.op_name(),
                    self.data.len() - self.pos
                ))
            })?;
        let (data, start) = (self.data, self.pos);
        self.pos = end;
        Ok(&data[start..end])
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// A `\n`-terminated line (for GLOBAL), without the newline.
    fn take_line(&mut self) -> Result<&'a str, PickleError> {
        let data = self.data;
        let rest = &data[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("truncated: GLOBAL line has no newline"));
        };
        let line = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.malformed("GLOBAL line is not UTF-8"))?;
        self.pos += len + 1;
        Ok(line)
    }

    /// Counts `n` more held values, refusing the pickle past [`MAX_HELD`].
    fn hold(&mut self, n: usize) -> Result<(), PickleError> {
        match self.held.checked_add(n).filter(|&held| held <= MAX_HELD) {
            Some(held) => {
                self.held = held;
                Ok(())
            }
            None => Err(self.malformed(format!(
                "{} would hold more than {MAX_HELD} objects, container items and memo entries \
                 (a state dict needs about 35 per tensor): refused as hostile",
                self.op_name()
            ))),
        }
    }

    /// Adds `object` to the arena.
    fn new_object(&mut self, object: Object) -> Result<Value, PickleError> {
        self.hold(1 + object.items())?;
        self.arena.push(object);
        Ok(Value::Obj(self.arena.len() - 1))
    }

    fn push(&mut self, value: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(self.malformed(format!(
                "stack deeper than {MAX_STACK} values: refused as hostile"
            )));
        }
        self.stack.push(value);
        Ok(())
    }

    fn push_obj(&mut self, object: Object) -> Result<(), PickleError> {
        let value = self.new_object(object)?;
        self.push(value)
    }

    fn push_mark(&mut self) -> Result<(), PickleError> {
        if self.marks.len() >= MAX_STACK {
            return Err(self.malformed(format!(
                "more than {MAX_STACK} open MARKs: refused as hostile"
            )));
        }
        self.marks.push(self.stack.len());
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.malformed(format!("stack underflow in {}", self.op_name())));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.malformed("stack underflow"))
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_to_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.malformed(format!("{} without a MARK", self.op_name())));
        };
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<Value, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&value) if self.stack.len() > floor => Ok(value),
            _ => Err(self.malformed(format!("stack underflow in {}", self.op_name()))),
        }
    }

    fn object(&self, value: Value) -> Option<&Object> {
        match value {
            Value::Obj(index) => self.arena.get(index),
            _ => None,
        }
    }

    fn kind(&self, value: Value) -> &'static str {
        match value {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Obj(_) => self.object(value).map_or("?", Object::kind),
        }
    }

    fn string(&self, value: Value) -> Option<&str> {
        match self.object(value)? {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<(), PickleError> {
        let value = self.top()?;
        if !self.memo.contains_key(&key) {
            self.hold(1)?;
        }
        self.memo.insert(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let value = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(format!("memo key {key} was never stored")))?;
        self.push(value)
    }

    /// The allow-listed global `module.name`. The names are copied only to report one that is
    /// not on the list: memoised names may be long and named again and again.
    fn resolve_global(&self, module: &str, name: &str) -> Result<Global, PickleError> {
        Global::resolve(module, name).ok_or_else(|| PickleError {
            offset: self.op_start,
            fault: PickleFault::Global {
                module: module.to_owned(),
                name: name.to_owned(),
            },
        })
    }

    /// The dict `target` (for SETITEM(S)).
    fn dict_mut(&mut self, target: Value) -> Result<&mut Vec<(Value, Value)>, PickleError> {
        let (kind, offset) = (self.kind(target), self.op_start);
        match self.object_mut(target) {
            Some(Object::Dict(pairs)) => Ok(pairs),
            _ => Err(PickleError {
                offset,
                fault: PickleFault::Malformed(format!("SETITEM on a {kind}, not a dict")),
            }),
        }
    }

    fn object_mut(&mut self, value: Value) -> Option<&mut Object> {
        match value {
            Value::Obj(index) => self.arena.get_mut(index),
            _ => None,
        }
    }

    fn set_items(&mut self, target: Value, items: Vec<Value>) -> Result<(), PickleError> {
        if items.len() % 2 == 1 {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        self.hold(items.len())?;
        let pairs = self.dict_mut(target)?;
        pairs.extend(items.chunks_exact(2).map(|pair| (pair[0], pair[1])));
        Ok(())
    }

    /// APPEND(S): `items` onto the list `target`.
    fn append(&mut self, target: Value, items: &[Value]) -> Result<(), PickleError> {
        self.hold(items.len())?;
        self.list_mut(target)?.extend_from_slice(items);
        Ok(())
    }

    fn list_mut(&mut self, target: Value) -> Result<&mut Vec<Value>, PickleError> {
        let (kind, offset) = (self.kind(target), self.op_start);
        match self.object_mut(target) {
            Some(Object::List(items)) => Ok(items),
            _ => Err(PickleError {
                offset,
                fault: PickleFault::Malformed(format!("APPEND on a {kind}, not a list")),
            }),
        }
    }

    fn int(&self, value: Value, what: &str) -> Result<i64, PickleError> {
        match value {
            Value::Int(n) => Ok(n),
            other => Err(self.malformed(format!("{what} is a {}, not an int", self.kind(other)))),
        }
    }

    fn tuple(&self, value: Value, what: &str) -> Result<&[Value], PickleError> {
        match self.object(value) {
            Some(Object::Tuple(items)) => Ok(items),
            _ => Err(self.malformed(format!("{what} is a {}, not a tuple", self.kind(value)))),
        }
    }

    /// A tensor size or stride: a tuple of at most [`MAX_DIMS`] ints, checked without copying.
    fn dims(&self, value: Value, what: &str) -> Result<&[Value], PickleError> {
        let items = self.tuple(value, what)?;
        if items.len() > MAX_DIMS {
            return Err(self.malformed(format!(
                "{what} has {} dimensions; at most {MAX_DIMS} are supported",
                items.len()
            )));
        }
        for &item in items {
            self.int(item, what)?;
        }
        Ok(items)
    }

    /// The ints of a tuple that [`dims`](Self::dims) accepted.
    fn dims_vec(&self, index: usize, what: &str) -> Result<Vec<i64>, PickleError> {
        self.dims(Value::Obj(index), what)?
            .iter()
            .map(|&v| self.int(v, what))
            .collect()
    }

    /// Runs one opcode; `Some(value)` at STOP.
    fn step(&mut self) -> Result<Option<Value>, PickleError> {
        self.op_start = self.pos;
        let Some(&code) = self.data.get(self.pos) else {
            return Err(self.malformed("truncated: no STOP opcode"));
        };
        self.pos += 1;
        match code {
            0x80 => {
                // PROTO: torch.save writes 2; anything up to the current 5 is fine.
                let [version] = self.take_array()?;
                if version > 5 {
                    return Err(self.malformed(format!("pickle protocol {version}")));
                }
            }
            0x95 => {
                // FRAME: framing is advisory; the frame's opcodes follow inline.
                self.take_array::<8>()?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.push_mark()?,
            b'}' => self.push_obj(Object::Dict(Vec::new()))?,
            b']' => self.push_obj(Object::List(Vec::new()))?,
            b')' => self.push_obj(Object::Tuple(Vec::new()))?,
            b't' => {
                let items = self.pop_to_mark()?;
                self.push_obj(Object::Tuple(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(code - 0x84);
                let mut items = vec![Value::None; n];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                self.push_obj(Object::Tuple(items))?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'J' => {
                let n = i32::from_le_bytes(self.take_array()?);
                self.push(Value::Int(i64::from(n)))?;
            }
            b'K' => {
                let [n] = self.take_array()?;
                self.push(Value::Int(i64::from(n)))?;
            }
            b'M' => {
                let n = u16::from_le_bytes(self.take_array()?);
                self.push(Value::Int(i64::from(n)))?;
            }
            0x8a => {
                // LONG1: n-byte little-endian two's complement.
                let [n] = self.take_array()?;
                if n > 8 {
                    return Err(
                        self.malformed(format!("LONG1 of {n} bytes does not fit in 64 bits"))
                    );
                }
                let bytes = self.take(usize::from(n))?;
                let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
                let mut le = [if negative { 0xFF } else { 0 }; 8];
                le[..bytes.len()].copy_from_slice(bytes);
                self.push(Value::Int(i64::from_le_bytes(le)))?;
            }
            b'X' | 0x8c => {
                let len = if code == b'X' {
                    u32::from_le_bytes(self.take_array()?) as usize
                } else {
                    usize::from(self.take_array::<1>()?[0])
                };
                // `take` checks the length against the bytes left before anything is allocated.
                let bytes = self.take(len)?;
                let Some(text) = std::str::from_utf8(bytes).ok().map(str::to_owned) else {
                    return Err(self.malformed("string is not UTF-8"));
                };
                self.push_obj(Object::Str(text))?;
            }
            b'q' => {
                let [key] = self.take_array()?;
                self.memo_put(u32::from(key))?;
            }
            b'r' => {
                let key = u32::from_le_bytes(self.take_array()?);
                self.memo_put(key)?;
            }
            0x94 => {
                let key =
                    u32::try_from(self.memo.len()).map_err(|_| self.malformed("memo too large"))?;
                self.memo_put(key)?;
            }
            b'h' => {
                let [key] = self.take_array()?;
                self.memo_get(u32::from(key))?;
            }
            b'j' => {
                let key = u32::from_le_bytes(self.take_array()?);
                self.memo_get(key)?;
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                self.set_items(target, vec![key, value])?;
            }
            b'u' => {
                let items = self.pop_to_mark()?;
                let target = self.top()?;
                self.set_items(target, items)?;
            }
            b'a' => {
                let value = self.pop()?;
                let target = self.top()?;
                self.append(target, &[value])?;
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                let target = self.top()?;
                self.append(target, &items)?;
            }
            b'c' => {
                let module = self.take_line()?;
                let name = self.take_line()?;
                let global = self.resolve_global(module, name)?;
                self.push_obj(Object::Global(global))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.string(module), self.string(name)) else {
                    return Err(self.malformed("STACK_GLOBAL needs two strings"));
                };
                let global = self.resolve_global(module, name)?;
                self.push_obj(Object::Global(global))?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.push(result)?;
            }
            b'b' => {
                // BUILD sets an object's state. Only the `_metadata` attribute of a state dict
                // (BUILD on a dict) is expected; it carries module versions Ember has no use for.
                let _state = self.pop()?;
                let target = self.top()?;
                if !matches!(self.object(target), Some(Object::Dict(_))) {
                    return Err(self.malformed(format!(
                        "BUILD on a {}; only a dict's attributes are accepted (and ignored)",
                        self.kind(target)
                    )));
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_load(pid)?;
                self.push_obj(Object::Storage(Box::new(storage)))?;
            }
            _ => {
                return Err(PickleError {
                    offset: self.op_start,
                    fault: PickleFault::Opcode { code },
                })
            }
        }
        Ok(None)
    }

    /// `("storage", torch.<X>Storage, key, location, numel)` → the storage it names.
    fn persistent_load(&self, pid: Value) -> Result<StorageObject, PickleError> {
        let items = self.tuple(pid, "persistent id")?;
        let &[tag, class, key, _location, numel] = items else {
            return Err(self.malformed(format!(
                "persistent id has {} items, expected (\"storage\", class, key, location, numel)",
                items.len()
            )));
        };
        if self.string(tag) != Some("storage") {
            return Err(self.malformed("persistent id is not a (\"storage\", …) tuple"));
        }
        let Some(Object::Global(Global::Storage(class))) = self.object(class) else {
            return Err(self.malformed(format!(
                "persistent id's storage type is a {}, not a torch storage class",
                self.kind(class)
            )));
        };
        let key = match key {
            Value::Obj(index) if self.string(key).is_some() => index,
            _ => return Err(self.malformed("persistent id's storage key is not a string")),
        };
        Ok(StorageObject {
            class: *class,
            key,
            numel: self.int(numel, "storage numel")?,
        })
    }

    /// Applies an allow-listed callable to its argument tuple.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, PickleError> {
        let Some(Object::Global(global)) = self.object(callable) else {
            return Err(self.malformed(format!(
                "REDUCE calls a {}, not an allowed global",
                self.kind(callable)
            )));
        };
        let global = *global;
        let args = self.tuple(args, "REDUCE arguments")?;
        // No allowed callable takes more than 7 arguments; checked before copying, as a shared
        // tuple could otherwise be copied by every REDUCE that names it.
        if args.len() > 7 {
            return Err(self.malformed(format!("REDUCE with {} arguments", args.len())));
        }
        let args = args.to_vec();
        match global {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.malformed("OrderedDict() with arguments"));
                }
                self.new_object(Object::Dict(Vec::new()))
            }
            Global::RebuildTensorV2 | Global::RebuildTensor => {
                // v2: (storage, storage_offset, size, stride, requires_grad, backward_hooks
                // [, metadata]); v1: the first four.
                let expected = if global == Global::RebuildTensor {
                    4..=4
                } else {
                    6..=7
                };
                if !expected.contains(&args.len()) {
                    return Err(self.malformed(format!(
                        "tensor rebuild with {} arguments, expected {expected:?}",
                        args.len()
                    )));
                }
                let storage = match args[0] {
                    Value::Obj(index)
                        if matches!(self.arena.get(index), Some(Object::Storage(_))) =>
                    {
                        index
                    }
                    other => {
                        return Err(self.malformed(format!(
                            "tensor rebuild on a {}, not a storage",
                            self.kind(other)
                        )))
                    }
                };
                let storage_offset = self.int(args[1], "storage offset")?;
                let dims = self.dims(args[2], "tensor size")?.len();
                let stride_dims = self.dims(args[3], "tensor stride")?.len();
                if dims != stride_dims {
                    return Err(self.malformed(format!(
                        "tensor size has {dims} dimensions but its stride {stride_dims}"
                    )));
                }
                // `dims` accepted both, so both are arena tuples.
                let (Value::Obj(shape), Value::Obj(stride)) = (args[2], args[3]) else {
                    return Err(self.malformed("tensor size or stride is not a tuple"));
                };
                self.new_object(Object::Tensor(Box::new(TensorObject {
                    storage,
                    storage_offset,
                    shape,
                    stride,
                })))
            }
            Global::RebuildParameter => {
                // (data, requires_grad, backward_hooks): the parameter is its data.
                match args.first() {
                    Some(&data)
                        if args.len() == 3
                            && matches!(self.object(data), Some(Object::Tensor(_))) =>
                    {
                        Ok(data)
                    }
                    _ => Err(self.malformed("_rebuild_parameter needs (tensor, bool, hooks)")),
                }
            }
            Global::Storage(_) => Err(self.malformed(
                "a torch storage class is called; storages may only appear in persistent ids",
            )),
        }
    }

    /// Collects the tensors of the final dict (see [`load_state_dict`]).
    fn state_dict(&self, top: Value) -> Result<StateDict, PickleError> {
        let Some(Object::Dict(top_pairs)) = self.object(top) else {
            return Err(self.malformed(format!(
                "the pickled object is a {}, not a dict of tensors",
                self.kind(top)
            )));
        };
        let mut pairs: &[(Value, Value)] = top_pairs;
        let nested = pairs
            .iter()
            .rev()
            .find(|(key, _)| self.string(*key) == Some("state_dict"))
            .and_then(|&(_, value)| self.object(value));
        if let Some(Object::Dict(inner)) = nested {
            pairs = inner;
        }

        let mut out = StateDict::default();
        // Arena index → index in `out`, then content → index in `out`: each storage and each
        // name is copied once, and each distinct key or name object is hashed once however
        // many entries name it (a memoised key can be long and named a million times).
        let mut storage_slots: HashMap<usize, usize> = HashMap::new();
        let mut storage_key_slots: HashMap<usize, usize> = HashMap::new();
        let mut storage_name_slots: HashMap<&str, usize> = HashMap::new();
        let mut key_slots: HashMap<usize, usize> = HashMap::new();
        let mut name_slots: HashMap<&str, usize> = HashMap::new();
        for &(key, value) in pairs {
            let Some(Object::Tensor(tensor)) = self.object(value) else {
                continue;
            };
            let (Value::Obj(key_index), Some(name)) = (key, self.string(key)) else {
                continue;
            };
            let storage = match storage_slots.get(&tensor.storage) {
                Some(&slot) => slot,
                None => {
                    let slot = self.storage_slot(
                        tensor.storage,
                        &mut out.storages,
                        &mut storage_key_slots,
                        &mut storage_name_slots,
                    )?;
                    storage_slots.insert(tensor.storage, slot);
                    slot
                }
            };
            let record = TensorRecord {
                storage,
                storage_offset: tensor.storage_offset,
                shape: self.dims_vec(tensor.shape, "tensor size")?,
                stride: self.dims_vec(tensor.stride, "tensor stride")?,
            };
            let known = match key_slots.get(&key_index) {
                Some(&slot) => Some(slot),
                None => name_slots.get(name).copied(),
            };
            let slot = match known.and_then(|slot| Some((slot, out.tensors.get_mut(slot)?))) {
                Some((slot, entry)) => {
                    entry.1 = record;
                    slot
                }
                None => {
                    if out.tensors.len() >= MAX_TENSORS {
                        return Err(self.malformed(format!(
                            "more than {MAX_TENSORS} tensors: refused as hostile"
                        )));
                    }
                    out.tensors.push((name.to_owned(), record));
                    name_slots.insert(name, out.tensors.len() - 1);
                    out.tensors.len() - 1
                }
            };
            key_slots.insert(key_index, slot);
        }
        Ok(out)
    }

    /// The index in `storages` of the storage at arena index `index`, adding it if its key is
    /// new. Persistent ids with the same key name the same storage (as in torch, which loads
    /// each key once); they must then agree on its class and size.
    fn storage_slot<'s>(
        &'s self,
        index: usize,
        storages: &mut Vec<StorageRecord>,
        key_slots: &mut HashMap<usize, usize>,
        name_slots: &mut HashMap<&'s str, usize>,
    ) -> Result<usize, PickleError> {
        let Some(Object::Storage(storage)) = self.arena.get(index) else {
            return Err(self.malformed("tensor without a storage"));
        };
        let Some(key) = self.string(Value::Obj(storage.key)) else {
            return Err(self.malformed("persistent id's storage key is not a string"));
        };
        let slot = match key_slots.get(&storage.key) {
            Some(&slot) => slot,
            None => {
                let slot = match name_slots.get(key) {
                    Some(&slot) => slot,
                    None => {
                        storages.push(StorageRecord {
                            class: storage.class,
                            key: key.to_owned(),
                            numel: storage.numel,
                        });
                        name_slots.insert(key, storages.len() - 1);
                        storages.len() - 1
                    }
                };
                key_slots.insert(storage.key, slot);
                slot
            }
        };
        match storages.get(slot) {
            Some(first) if first.class == storage.class && first.numel == storage.numel => Ok(slot),
            Some(first) => Err(self.malformed(format!(
                "storage \"{key}\" is declared as {} {} elements and as {} {} elements",
                first.numel, first.class.dtype, storage.numel, storage.class.dtype
            ))),
            None => Err(self.malformed("tensor without a storage")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_slots_and_values_stay_the_size_the_caps_assume() {
        // MAX_HELD's budget: 2^20 arena slots of at most 32 bytes (32 MiB), stack values of 16.
        assert!(std::mem::size_of::<Object>() <= 32);
        assert_eq!(std::mem::size_of::<Value>(), 16);
    }
}
