//! PyTorch's checkpoint files as `torch.save` writes them since PyTorch 1.6: a zip archive
//! holding `<name>/data.pkl` (the pickled object: a state_dict, or a dict wrapping one) and
//! `<name>/data/<key>` (one raw little-endian storage per key).
//!
//! The pickle runs on candle's own pickle machine (`candle_core::pickle::Stack`, which
//! yields `Object` trees); turning its tensor records into tensors happens here. candle's
//! `PthTensors` / `read_all_with_key` do that too, but index into the records with
//! `Vec::remove` (a malformed file panics), print "skipping" lines on stderr for entries
//! they do not understand, take one wrapper key only and read only contiguous layouts. Here
//! every record is checked and a bad one becomes an error naming the tensor, tensors are
//! read lazily (a wrapped checkpoint's optimizer state is never loaded), and any stride
//! layout is read.

use anyhow::{anyhow, bail, Context, Result};
use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Where a tensor's values lie in the archive, as its pickle record (`_rebuild_tensor_v2`)
/// describes them: a storage, an element offset into it, a shape and element strides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    /// The storage's key (its file is `<name>/data/<key>`).
    pub storage: String,
    /// Element type of the storage.
    pub dtype: DType,
    /// Elements the storage declares.
    pub storage_len: usize,
    /// First element of the tensor in the storage.
    pub offset: usize,
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Element strides, one per dimension.
    pub strides: Vec<usize>,
}

/// A value of a checkpoint's pickled object, as far as weights are concerned.
#[derive(Debug, Clone)]
pub enum Value {
    /// A tensor (read on demand with [`PthFile::tensor`]).
    Tensor(TensorRecord),
    /// A tensor record normlab cannot read, and why (an unsupported dtype, a malformed
    /// record): an error only if the tensor is needed.
    Unreadable(String),
    /// A dict (state_dicts and the dicts that wrap them); keys as text.
    Dict(Vec<(String, Value)>),
    /// Anything else (numbers, strings, lists, pickled classes), described in a few words.
    Other(String),
}

/// An open PyTorch checkpoint: its pickled object and the archive to read tensors from.
pub struct PthFile {
    path: PathBuf,
    zip: zip::ZipArchive<BufReader<File>>,
    prefix: String,
    storages: HashMap<String, Vec<u8>>,
    /// The pickled object.
    pub root: Value,
}

impl PthFile {
    /// Opens `path` and runs its pickle. Errors name the file and say what is wrong with it
    /// (not a zip archive, a TorchScript archive, no data.pkl, a pickle that does not parse).
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display();
        let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(|e| {
            anyhow!("{shown} is not a complete PyTorch checkpoint: its zip archive cannot be read ({e}); a truncated download or copy? (torch.save writes .pt/.pth files as zip archives)")
        })?;
        let names: Vec<String> = zip.file_names().filter_map(|n| n.ok().map(|n| n.into_owned())).collect();
        let Some(pkl) = names.iter().find(|n| *n == "data.pkl" || n.ends_with("/data.pkl")).cloned() else {
            bail!("{shown} is a zip archive without data.pkl, not a torch.save checkpoint (it holds: {})", first_names(&names));
        };
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or_default().to_string();
        if names.iter().any(|n| n.starts_with(&format!("{prefix}code/")) || *n == format!("{prefix}constants.pkl")) {
            bail!("{shown} is a TorchScript archive (torch.jit.save), not a state_dict: save it with torch.save(model.state_dict(), F)");
        }
        if let Ok(order) = read_entry(&mut zip, &format!("{prefix}byteorder"), path) {
            if String::from_utf8_lossy(&order).trim() == "big" {
                bail!("{shown} was written on a big-endian machine; normlab reads little-endian checkpoints only (re-save it on a little-endian machine)");
            }
        }
        let bytes = read_entry(&mut zip, &pkl, path)?;
        let object = run_pickle(&bytes).map_err(|e| anyhow!("{shown}: cannot parse {pkl}: {e}; is the file damaged?"))?;
        let root = convert(object);
        Ok(Self { path: path.to_path_buf(), zip, prefix, storages: HashMap::new(), root })
    }

    /// The tensor `record` describes, on the CPU. Errors name the file and the storage.
    pub fn tensor(&mut self, record: &TensorRecord) -> Result<Tensor> {
        let shown = self.path.display().to_string();
        let size = record.dtype.size_in_bytes();
        if !self.storages.contains_key(&record.storage) {
            let name = format!("{}data/{}", self.prefix, record.storage);
            let bytes = read_entry(&mut self.zip, &name, &self.path)?;
            if (bytes.len() as u128) < record.storage_len as u128 * size as u128 {
                bail!("{shown}: storage {name} holds {} bytes, its record declares {} elements of {size} bytes (a damaged file?)", bytes.len(), record.storage_len);
            }
            self.storages.insert(record.storage.clone(), bytes);
        }
        let bytes = &self.storages[&record.storage];
        let count: u128 = record.shape.iter().map(|&d| d as u128).product();
        if count == 0 {
            return Ok(Tensor::zeros(record.shape.as_slice(), record.dtype, &Device::Cpu)?);
        }
        // The last element the view reaches must lie inside the storage.
        let last: u128 = record.offset as u128 + record.shape.iter().zip(&record.strides).map(|(&d, &s)| (d as u128 - 1) * s as u128).sum::<u128>();
        if last >= record.storage_len as u128 {
            bail!("{shown}: a tensor of shape {:?} reaches element {last} of storage {}, which has {} elements (a damaged file?)", record.shape, record.storage, record.storage_len);
        }
        let count = count as usize;
        let data: Vec<u8> = if is_row_major(&record.shape, &record.strides) {
            bytes[record.offset * size..(record.offset + count) * size].to_vec()
        } else {
            let mut out = Vec::with_capacity(count * size);
            let mut index = vec![0usize; record.shape.len()];
            for _ in 0..count {
                let at = record.offset + index.iter().zip(&record.strides).map(|(i, s)| i * s).sum::<usize>();
                out.extend_from_slice(&bytes[at * size..(at + 1) * size]);
                for d in (0..index.len()).rev() {
                    index[d] += 1;
                    if index[d] < record.shape[d] {
                        break;
                    }
                    index[d] = 0;
                }
            }
            out
        };
        Ok(Tensor::from_raw_buffer(&data, record.dtype, &record.shape, &Device::Cpu)?)
    }
}

/// Whether strides are those of a row-major (C-contiguous) layout, ignoring dimensions of
/// size 1 (whose stride PyTorch leaves arbitrary).
fn is_row_major(shape: &[usize], strides: &[usize]) -> bool {
    let mut want = 1usize;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != want {
            return false;
        }
        want = want.saturating_mul(d);
    }
    true
}

fn first_names(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s += &format!(", ... ({} entries)", names.len());
    }
    if names.is_empty() {
        s = "nothing".into();
    }
    s
}

fn read_entry(zip: &mut zip::ZipArchive<BufReader<File>>, name: &str, path: &Path) -> Result<Vec<u8>> {
    let mut entry = zip.by_name(name).map_err(|e| anyhow!("{}: cannot find {name} in the archive ({e})", path.display()))?;
    let mut bytes = Vec::with_capacity(entry.size().min(1 << 26) as usize); // a damaged header may claim any size
    entry.read_to_end(&mut bytes).map_err(|e| anyhow!("{}: cannot read {name} ({e}); is the file damaged?", path.display()))?;
    Ok(bytes)
}

/// Runs the pickle in `bytes` on candle's pickle machine. A panic inside it (a malformed
/// pickle it does not guard against) becomes an error.
fn run_pickle(bytes: &[u8]) -> Result<Object> {
    let run = || -> candle_core::Result<Object> {
        let mut stack = Stack::empty();
        stack.read_loop(&mut &bytes[..])?;
        stack.finalize()
    };
    match std::panic::catch_unwind(run) {
        Ok(result) => Ok(result?),
        Err(_) => bail!("the pickle is malformed"),
    }
}

fn key_text(key: &Object) -> String {
    match key {
        Object::Unicode(s) => s.clone(),
        Object::Int(i) => i.to_string(),
        Object::Long(i) => i.to_string(),
        other => describe(other),
    }
}

/// A few words on what a pickled object is.
fn describe(obj: &Object) -> String {
    match obj {
        Object::Int(i) => format!("the number {i}"),
        Object::Long(i) => format!("the number {i}"),
        Object::Float(f) => format!("the number {f}"),
        Object::Unicode(s) => format!("the text {s:?}"),
        Object::Bool(b) => format!("{b}"),
        Object::None => "None".into(),
        Object::Tuple(v) => format!("a tuple of {}", v.len()),
        Object::List(v) => format!("a list of {}", v.len()),
        Object::Dict(v) => format!("a dict of {}", v.len()),
        Object::Class { module_name, class_name } => format!("the class {module_name}.{class_name}"),
        Object::Reduce { callable, .. } | Object::Build { callable, .. } => match callable.as_ref() {
            Object::Class { module_name, class_name } => format!("a pickled {module_name}.{class_name}"),
            inner => describe(inner),
        },
        Object::PersistentLoad(_) => "a storage".into(),
        Object::Mark => "a pickle mark".into(),
    }
}

fn convert(obj: Object) -> Value {
    match obj {
        Object::Dict(pairs) => Value::Dict(pairs.into_iter().map(|(k, v)| (key_text(&k), convert(v))).collect()),
        Object::Reduce { callable, args } => match tensor_record(&callable, &args) {
            Some(Ok(record)) => Value::Tensor(record),
            Some(Err(why)) => Value::Unreadable(why),
            None => Value::Other(describe(&Object::Reduce { callable, args })),
        },
        other => Value::Other(describe(&other)),
    }
}

fn class_of(obj: &Object) -> Option<(&str, &str)> {
    match obj {
        Object::Class { module_name, class_name } => Some((module_name, class_name)),
        _ => None,
    }
}

/// The tensor record of a `callable(args)` reduction: `None` when it does not rebuild a
/// tensor, an error when it does but its record is malformed or of an unsupported type.
fn tensor_record(callable: &Object, args: &Object) -> Option<Result<TensorRecord, String>> {
    let Object::Tuple(items) = args else {
        return class_of(callable).filter(|(m, _)| m.starts_with("torch")).map(|(m, c)| Err(format!("{m}.{c} with arguments that are not a tuple")));
    };
    match class_of(callable)? {
        ("torch._utils", "_rebuild_tensor_v2") => Some(rebuild_v2(items)),
        // nn.Parameter(tensor, requires_grad, hooks) and its variant with state.
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => match items.first() {
            Some(Object::Reduce { callable, args }) => tensor_record(callable, args),
            _ => Some(Err("a parameter without its tensor".into())),
        },
        // A tensor subclass: (func, type, func's args, state).
        ("torch._tensor", "_rebuild_from_type_v2") => match (items.first(), items.get(2)) {
            (Some(func), Some(inner)) => tensor_record(func, inner),
            _ => Some(Err("a tensor subclass record with too few fields".into())),
        },
        (m, c) if m.starts_with("torch") && c.starts_with("_rebuild") => Some(Err(format!("a tensor stored as {m}.{c}, which normlab does not read"))),
        _ => None,
    }
}

fn index(obj: &Object) -> Option<usize> {
    match obj {
        Object::Int(i) => usize::try_from(*i).ok(),
        Object::Long(i) => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn indices(obj: &Object) -> Option<Vec<usize>> {
    match obj {
        Object::Tuple(v) | Object::List(v) => v.iter().map(index).collect(),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks, ...)`,
/// the storage a persistent id `('storage', torch.XStorage, key, location, numel)`.
fn rebuild_v2(items: &[Object]) -> Result<TensorRecord, String> {
    let bad = |what: &str| format!("a tensor record with {what}");
    let Some(Object::PersistentLoad(id)) = items.first() else {
        return Err(bad("no storage"));
    };
    let Object::Tuple(id) = id.as_ref() else {
        return Err(bad("a storage id that is not a tuple"));
    };
    let (Some(class), Some(Object::Unicode(key)), Some(len)) = (id.get(1).and_then(class_of), id.get(2), id.get(4).and_then(index)) else {
        return Err(bad("a malformed storage id"));
    };
    let dtype = match class.1 {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" => DType::U8,
        other => return Err(format!("a tensor of {other}, a type normlab does not read")),
    };
    let offset = items.get(1).and_then(index).ok_or_else(|| bad("no storage offset"))?;
    let shape = items.get(2).and_then(indices).ok_or_else(|| bad("no shape"))?;
    let strides = items.get(3).and_then(indices).ok_or_else(|| bad("no strides"))?;
    if strides.len() != shape.len() {
        return Err(bad("as many strides as dimensions missing"));
    }
    Ok(TensorRecord { storage: key.clone(), dtype, storage_len: len, offset, shape, strides })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_major_ignores_unit_dimensions() {
        assert!(is_row_major(&[2, 3, 4], &[12, 4, 1]));
        assert!(is_row_major(&[2, 1, 4], &[4, 99, 1]));
        assert!(!is_row_major(&[3, 2], &[1, 3]));
        assert!(is_row_major(&[], &[]));
    }

    fn storage_id(class: &str, key: &str, len: i32) -> Object {
        let cls = Object::Class { module_name: "torch".into(), class_name: class.into() };
        Object::PersistentLoad(Box::new(Object::Tuple(vec![Object::Unicode("storage".into()), cls, Object::Unicode(key.into()), Object::Unicode("cpu".into()), Object::Int(len)])))
    }

    fn ints(v: &[i32]) -> Object {
        Object::Tuple(v.iter().map(|&i| Object::Int(i)).collect())
    }

    #[test]
    fn tensor_records_are_checked_not_trusted() {
        let v2 = Object::Class { module_name: "torch._utils".into(), class_name: "_rebuild_tensor_v2".into() };
        let good = Object::Tuple(vec![storage_id("FloatStorage", "0", 6), Object::Int(0), ints(&[2, 3]), ints(&[3, 1]), Object::Bool(false), Object::Dict(vec![])]);
        let r = tensor_record(&v2, &good).unwrap().unwrap();
        assert_eq!((r.dtype, r.shape.clone(), r.strides.clone(), r.storage_len), (DType::F32, vec![2, 3], vec![3, 1], 6));
        // Too few fields, wrong types, unsupported storages: errors, never a panic.
        for args in [
            Object::Tuple(vec![]),
            Object::Tuple(vec![storage_id("FloatStorage", "0", 6)]),
            Object::Tuple(vec![storage_id("FloatStorage", "0", 6), Object::Int(-1), ints(&[2]), ints(&[1])]),
            Object::Tuple(vec![storage_id("FloatStorage", "0", 6), Object::Int(0), ints(&[2, 3]), ints(&[1])]),
            Object::Tuple(vec![storage_id("BoolStorage", "0", 6), Object::Int(0), ints(&[6]), ints(&[1])]),
            Object::Tuple(vec![Object::None, Object::Int(0), ints(&[6]), ints(&[1])]),
            Object::Int(3),
        ] {
            assert!(tensor_record(&v2, &args).unwrap().is_err(), "{args:?}");
        }
        // Not a tensor at all.
        let other = Object::Class { module_name: "collections".into(), class_name: "Counter".into() };
        assert!(tensor_record(&other, &good).is_none());
        let param = Object::Class { module_name: "torch._utils".into(), class_name: "_rebuild_parameter".into() };
        let wrapped = Object::Tuple(vec![Object::Reduce { callable: Box::new(v2), args: Box::new(good) }, Object::Bool(true)]);
        assert!(tensor_record(&param, &wrapped).unwrap().is_ok());
    }

    #[test]
    fn a_malformed_pickle_is_an_error() {
        for bytes in [&b""[..], b"\x80\x02}q\x00(X", b"\xff\xff", b"\x80\x02t."] {
            assert!(run_pickle(bytes).is_err(), "{bytes:?}");
        }
    }
}
