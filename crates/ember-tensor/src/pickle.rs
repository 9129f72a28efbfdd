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
//! flat (no recursion however deep the nesting), and every opcode allocates at most in proportion
//! to the bytes it consumed — the whole parse is bounded by the pickle's length.
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

/// A pickle value: scalars inline, everything else an index into the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Obj(usize),
}

/// An object of the arena.
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
    Storage(StorageRecord),
    Tensor {
        storage: usize,
        storage_offset: i64,
        shape: Vec<i64>,
        stride: Vec<i64>,
    },
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
            Object::Tensor { .. } => "tensor",
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
}

impl Unpickler<'_> {
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

    fn take(&mut self, n: usize) -> Result<&[u8], PickleError> {
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
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// A `\n`-terminated line (for GLOBAL), without the newline.
    fn take_line(&mut self) -> Result<&str, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("truncated: GLOBAL line has no newline"));
        };
        let line = std::str::from_utf8(&rest[..len])
            .map_err(|_| self.malformed("GLOBAL line is not UTF-8"))?;
        self.pos += len + 1;
        Ok(line)
    }

    fn push_obj(&mut self, object: Object) {
        self.arena.push(object);
        self.stack.push(Value::Obj(self.arena.len() - 1));
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
        self.memo.insert(key, value);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), PickleError> {
        let value = *self
            .memo
            .get(&key)
            .ok_or_else(|| self.malformed(format!("memo key {key} was never stored")))?;
        self.stack.push(value);
        Ok(())
    }

    fn push_global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        match Global::resolve(module, name) {
            Some(global) => {
                self.push_obj(Object::Global(global));
                Ok(())
            }
            None => Err(PickleError {
                offset: self.op_start,
                fault: PickleFault::Global {
                    module: module.to_owned(),
                    name: name.to_owned(),
                },
            }),
        }
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
        let pairs = self.dict_mut(target)?;
        pairs.extend(items.chunks_exact(2).map(|pair| (pair[0], pair[1])));
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

    fn int_tuple(&self, value: Value, what: &str) -> Result<Vec<i64>, PickleError> {
        let items = self.tuple(value, what)?;
        if items.len() > MAX_DIMS {
            return Err(self.malformed(format!(
                "{what} has {} dimensions; at most {MAX_DIMS} are supported",
                items.len()
            )));
        }
        items.iter().map(|&v| self.int(v, what)).collect()
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
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.push_obj(Object::Dict(Vec::new())),
            b']' => self.push_obj(Object::List(Vec::new())),
            b')' => self.push_obj(Object::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_to_mark()?;
                self.push_obj(Object::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(code - 0x84);
                let mut items = vec![Value::None; n];
                for slot in items.iter_mut().rev() {
                    *slot = self.pop()?;
                }
                self.push_obj(Object::Tuple(items));
            }
            b'N' => self.stack.push(Value::None),
            0x88 => self.stack.push(Value::Bool(true)),
            0x89 => self.stack.push(Value::Bool(false)),
            b'J' => {
                let n = i32::from_le_bytes(self.take_array()?);
                self.stack.push(Value::Int(i64::from(n)));
            }
            b'K' => {
                let [n] = self.take_array()?;
                self.stack.push(Value::Int(i64::from(n)));
            }
            b'M' => {
                let n = u16::from_le_bytes(self.take_array()?);
                self.stack.push(Value::Int(i64::from(n)));
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
                self.stack.push(Value::Int(i64::from_le_bytes(le)));
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
                self.push_obj(Object::Str(text));
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
                self.list_mut(target)?.push(value);
            }
            b'e' => {
                let items = self.pop_to_mark()?;
                let target = self.top()?;
                self.list_mut(target)?.extend(items);
            }
            b'c' => {
                let module = self.take_line()?.to_owned();
                let name = self.take_line()?.to_owned();
                self.push_global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.string(module), self.string(name)) else {
                    return Err(self.malformed("STACK_GLOBAL needs two strings"));
                };
                let (module, name) = (module.to_owned(), name.to_owned());
                self.push_global(&module, &name)?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let result = self.reduce(callable, args)?;
                self.stack.push(result);
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
                self.push_obj(Object::Storage(storage));
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
    fn persistent_load(&self, pid: Value) -> Result<StorageRecord, PickleError> {
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
        let key = self
            .string(key)
            .ok_or_else(|| self.malformed("persistent id's storage key is not a string"))?;
        Ok(StorageRecord {
            class: *class,
            key: key.to_owned(),
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
                self.arena.push(Object::Dict(Vec::new()));
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
                let shape = self.int_tuple(args[2], "tensor size")?;
                let stride = self.int_tuple(args[3], "tensor stride")?;
                if shape.len() != stride.len() {
                    return Err(self.malformed(format!(
                        "tensor size has {} dimensions but its stride {}",
                        shape.len(),
                        stride.len()
                    )));
                }
                self.arena.push(Object::Tensor {
                    storage,
                    storage_offset,
                    shape,
                    stride,
                });
            }
            Global::RebuildParameter => {
                // (data, requires_grad, backward_hooks): the parameter is its data.
                match args.first() {
                    Some(&data)
                        if args.len() == 3
                            && matches!(self.object(data), Some(Object::Tensor { .. })) =>
                    {
                        return Ok(data)
                    }
                    _ => {
                        return Err(self.malformed("_rebuild_parameter needs (tensor, bool, hooks)"))
                    }
                }
            }
            Global::Storage(_) => {
                return Err(self.malformed(
                    "a torch storage class is called; storages may only appear in persistent ids",
                ))
            }
        }
        Ok(Value::Obj(self.arena.len() - 1))
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
        // Arena index → index in `out`: each storage is copied once, and a name object met
        // again (a repeated BINGET) is not copied again.
        let mut storage_slots: HashMap<usize, usize> = HashMap::new();
        let mut key_slots: HashMap<usize, usize> = HashMap::new();
        let mut name_slots: HashMap<&str, usize> = HashMap::new();
        for &(key, value) in pairs {
            let Some(Object::Tensor {
                storage,
                storage_offset,
                shape,
                stride,
            }) = self.object(value)
            else {
                continue;
            };
            let (Value::Obj(key_index), Some(name)) = (key, self.string(key)) else {
                continue;
            };
            let storage = match storage_slots.get(storage) {
                Some(&slot) => slot,
                None => {
                    let Some(Object::Storage(record)) = self.arena.get(*storage) else {
                        return Err(self.malformed("tensor without a storage"));
                    };
                    out.storages.push(record.clone());
                    storage_slots.insert(*storage, out.storages.len() - 1);
                    out.storages.len() - 1
                }
            };
            let record = TensorRecord {
                storage,
                storage_offset: *storage_offset,
                shape: shape.clone(),
                stride: stride.clone(),
            };
            let slot = match key_slots.get(&key_index).or_else(|| name_slots.get(name)) {
                Some(&slot) => {
                    out.tensors[slot].1 = record;
                    slot
                }
                None => {
                    out.tensors.push((name.to_owned(), record));
                    out.tensors.len() - 1
                }
            };
            key_slots.insert(key_index, slot);
            name_slots.insert(name, slot);
        }
        Ok(out)
    }
}
