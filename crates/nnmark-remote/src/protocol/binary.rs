//! The binary tensor data extension of the Open Inference Protocol (Triton's, also spoken by
//! KServe and MLServer): a body is a JSON header of `Inference-Header-Content-Length` bytes
//! followed by raw tensors, one after another in the order of the tensors that declare
//! `"parameters": {"binary_data_size": n}`. Numbers are little-endian; a `BYTES` tensor is each
//! element as a 4-byte little-endian length and its bytes.
//!
//! Both directions go through JSON: a binary tensor read is turned into the same `data` array a
//! JSON body would carry (so every check of the JSON path applies to it), and a tensor to be
//! sent as binary is built as JSON first and then moved into the binary part.

use serde_json::{Value, json};

/// The header naming the JSON part's length, as Triton and its clients spell it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Splits a body into its JSON header and binary part, given the header's announced length
/// (none: the whole body is JSON).
pub fn split<'a>(
    body: &'a [u8],
    header_length: Option<&str>,
) -> Result<(&'a [u8], &'a [u8]), String> {
    let Some(text) = header_length else {
        return Ok((body, &[]));
    };
    let n: usize = text.trim().parse().map_err(|_| {
        format!("{HEADER_LENGTH} '{text}' is not a byte count (a non-negative integer)")
    })?;
    if n > body.len() {
        return Err(format!(
            "{HEADER_LENGTH} says the JSON part holds {n} bytes; the body holds {}",
            body.len()
        ));
    }
    Ok(body.split_at(n))
}

/// Bytes one element of `datatype` takes (None for `BYTES`, whose elements carry their own
/// length, and for types nnmark does not read).
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

/// Decodes one raw tensor into JSON values.
fn decode(datatype: &str, raw: &[u8], at: &str) -> Result<Vec<Value>, String> {
    if datatype == "BYTES" {
        let mut out = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| format!("{at}: a BYTES element's 4-byte length is cut short"))?;
            let len = u32::from_le_bytes(*len) as usize;
            if len > tail.len() {
                return Err(format!(
                    "{at}: a BYTES element claims {len} bytes; {} remain",
                    tail.len()
                ));
            }
            let (s, tail) = tail.split_at(len);
            out.push(Value::String(String::from_utf8_lossy(s).into_owned()));
            rest = tail;
        }
        return Ok(out);
    }
    let size = element_size(datatype)
        .ok_or_else(|| format!("{at}: binary {datatype} data is not supported"))?;
    if !raw.len().is_multiple_of(size) {
        return Err(format!(
            "{at}: {} bytes are not whole {datatype} values ({size} bytes each)",
            raw.len()
        ));
    }
    let num = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    Ok(raw
        .chunks_exact(size)
        .map(|b| match datatype {
            "FP32" => num(f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64),
            "FP64" => num(f64::from_le_bytes(b.try_into().expect("8 bytes"))),
            "FP16" => num(half_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64),
            "BF16" => num(f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16) as f64),
            "INT64" => json!(i64::from_le_bytes(b.try_into().expect("8 bytes"))),
            "UINT64" => json!(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
            "INT32" => json!(i32::from_le_bytes(b.try_into().expect("4 bytes"))),
            "UINT32" => json!(u32::from_le_bytes(b.try_into().expect("4 bytes"))),
            "INT16" => json!(i16::from_le_bytes([b[0], b[1]])),
            "UINT16" => json!(u16::from_le_bytes([b[0], b[1]])),
            "INT8" => json!(b[0] as i8),
            "UINT8" => json!(b[0]),
            _ => json!(b[0] != 0),
        })
        .collect())
}

/// IEEE half precision to single (the `half` crate would do it; one function is not worth a
/// dependency).
fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Moves the binary part into the tensors of `field` (`inputs` or `outputs`) that declare a
/// `binary_data_size`, as `data` arrays; every byte of `binary` must be claimed.
pub fn inline(doc: &mut Value, field: &str, binary: &[u8]) -> Result<(), String> {
    let mut rest = binary;
    if let Some(tensors) = doc.get_mut(field).and_then(Value::as_array_mut) {
        for (i, t) in tensors.iter_mut().enumerate() {
            let Some(size) = t.pointer("/parameters/binary_data_size") else {
                continue;
            };
            let at = format!("{field}[{i}]");
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| format!("{at}.parameters.binary_data_size is not a byte count"))?;
            if size > rest.len() {
                return Err(format!(
                    "{at} declares {size} bytes of binary data; {} remain in the body",
                    rest.len()
                ));
            }
            let (raw, tail) = rest.split_at(size);
            rest = tail;
            let datatype = t.get("datatype").and_then(Value::as_str).unwrap_or("");
            let values = decode(datatype, raw, &at)?;
            t["data"] = Value::Array(values);
        }
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes of binary data follow the JSON part that no tensor declares",
            rest.len()
        ));
    }
    Ok(())
}

/// Encodes one JSON `data` array as raw bytes of `datatype`.
fn encode(datatype: &str, data: &[Value], out: &mut Vec<u8>) {
    for v in data {
        match datatype {
            "FP32" => out.extend((v.as_f64().unwrap_or(f64::NAN) as f32).to_le_bytes()),
            "FP64" => out.extend(v.as_f64().unwrap_or(f64::NAN).to_le_bytes()),
            "INT64" => out.extend(v.as_i64().unwrap_or(0).to_le_bytes()),
            "INT32" => out.extend((v.as_i64().unwrap_or(0) as i32).to_le_bytes()),
            _ => {
                let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                out.extend((s.len() as u32).to_le_bytes());
                out.extend(s.as_bytes());
            }
        }
    }
}

/// Moves the `data` of the outputs marked in `binary` into a binary part (each then declares
/// its `binary_data_size`); returns that part, empty when no output is binary.
pub fn extract_outputs(doc: &mut Value, binary: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(tensors) = doc.get_mut("outputs").and_then(Value::as_array_mut) {
        for (t, _) in tensors.iter_mut().zip(binary).filter(|(_, b)| **b) {
            let datatype = t
                .get("datatype")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(Value::Array(data)) = t.as_object_mut().and_then(|o| o.remove("data")) else {
                continue;
            };
            let start = out.len();
            encode(&datatype, &data, &mut out);
            t["parameters"]["binary_data_size"] = json!(out.len() - start);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_the_binary_part() {
        let mut doc = json!({"outputs": [
            {"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
            {"name": "c", "datatype": "BYTES", "shape": [1, 1], "data": ["0.75:1:one"]},
            {"name": "l", "datatype": "INT64", "shape": [1], "data": [1]},
        ]});
        let original = doc.clone();
        let raw = extract_outputs(&mut doc, &[true, true, false]);
        assert_eq!(raw.len(), 8 + 4 + 10);
        assert!(doc["outputs"][0].get("data").is_none());
        assert_eq!(doc["outputs"][1]["parameters"]["binary_data_size"], 14);
        inline(&mut doc, "outputs", &raw).unwrap();
        for i in 0..3 {
            assert_eq!(doc["outputs"][i]["data"], original["outputs"][i]["data"]);
        }
    }

    #[test]
    fn bad_binary_parts_are_named() {
        let doc = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
            "parameters": {"binary_data_size": 8}}]});
        let e = inline(&mut doc.clone(), "inputs", &[0; 4]).unwrap_err();
        assert!(
            e.contains("declares 8 bytes") && e.contains("4 remain"),
            "{e}"
        );
        let e = inline(&mut doc.clone(), "inputs", &[0; 12]).unwrap_err();
        assert!(e.contains("4 bytes of binary data follow"), "{e}");
        let mut odd = doc.clone();
        odd["inputs"][0]["parameters"]["binary_data_size"] = json!(6);
        let e = inline(&mut odd, "inputs", &[0; 6]).unwrap_err();
        assert!(e.contains("not whole FP32 values"), "{e}");
        let e = split(b"{}", Some("9")).unwrap_err();
        assert!(e.contains("holds 9 bytes; the body holds 2"), "{e}");
        assert!(split(b"{}", Some("x")).unwrap_err().contains("'x'"));
        let cut = [5u8, 0, 0, 0, b'a'];
        let mut bytes =
            json!({"outputs": [{"datatype": "BYTES", "parameters": {"binary_data_size": 5}}]});
        let e = inline(&mut bytes, "outputs", &cut).unwrap_err();
        assert!(e.contains("claims 5 bytes; 1 remain"), "{e}");
    }

    #[test]
    fn half_precision_values_decode() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0x3800), 0.5);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0000), 0.0);
        assert!(half_to_f32(0x7c00).is_infinite());
    }
}
