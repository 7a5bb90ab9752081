//! ONNX export of nnmark's MLP and LeNet, so a marked model can be deployed on any ONNX
//! runtime (Triton, ONNX Runtime, OpenVINO) and an ONNX suspect is checked the same way.
//! The graph is built from the weights file's PyTorch-layout tensors (the names and layouts
//! `nnmark` writes), with the model's input normalisation as its first two nodes.

use std::path::Path;

use nnmark::model::Architecture;
use nnmark::weights::{self, WeightsMeta};
use nnmark::{Error, Result};
use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto::Dimension, tensor_shape_proto::dimension,
    type_proto,
};

pub(crate) fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: String::new(),
            value: Some(match d {
                Some(v) => dimension::Value::DimValue(*v),
                None => dimension::Value::DimParam("N".into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        doc_string: String::new(),
    }
}

fn tensor(name: &str, dims: &[usize], values: Vec<f32>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::Float as i32,
        float_data: values,
        name: name.into(),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    last: String,
}

impl Graph {
    fn node(&mut self, op: &str, extra_inputs: &[&str], attrs: Vec<AttributeProto>) {
        let out = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        let mut input = vec![self.last.clone()];
        input.extend(extra_inputs.iter().map(|s| s.to_string()));
        self.nodes.push(NodeProto {
            input,
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
            ..Default::default()
        });
        self.last = out;
    }
}

/// Builds the ONNX model of the nnmark weights file at `path`.
pub fn to_onnx(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let meta: WeightsMeta = weights::read_meta(path, &bytes)?.ok_or_else(|| {
        Error::format(
            path,
            "has no nnmark metadata; export works on files nnmark wrote",
        )
    })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a safetensors file: {e}")))?;
    let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
        let t = st
            .tensor(name)
            .map_err(|_| Error::format(path, format!("tensor '{name}' is missing")))?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(Error::format(path, format!("tensor '{name}' is not F32")));
        }
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((t.shape().to_vec(), v))
    };
    let spec = &meta.spec;
    let s = spec.input;
    let mut g = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        last: "input".into(),
    };
    let n = &spec.normalization;
    if !(n.mean.iter().all(|&m| m == 0.0) && n.std.iter().all(|&d| d == 1.0)) {
        let c = s.channels;
        g.initializers
            .push(tensor("norm_mean", &[1, c, 1, 1], n.mean.clone()));
        g.initializers
            .push(tensor("norm_std", &[1, c, 1, 1], n.std.clone()));
        g.node("Sub", &["norm_mean"], vec![]);
        g.node("Div", &["norm_std"], vec![]);
    }
    let add = |g: &mut Graph, name: &str| -> Result<()> {
        for part in ["weight", "bias"] {
            let full = format!("{name}.{part}");
            let (dims, v) = get(&full)?;
            g.initializers.push(tensor(&full, &dims, v));
        }
        Ok(())
    };
    let gemm = |g: &mut Graph, name: &str| {
        g.node(
            "Gemm",
            &[&format!("{name}.weight"), &format!("{name}.bias")],
            vec![int("transB", 1)],
        )
    };
    match spec.architecture {
        Architecture::Mlp => {}
        Architecture::Lenet => {
            let pad = if s.height == 28 { 2 } else { 0 };
            for (layer, p) in [("conv1", pad), ("conv2", 0)] {
                add(&mut g, layer)?;
                g.node(
                    "Conv",
                    &[&format!("{layer}.weight"), &format!("{layer}.bias")],
                    vec![ints("kernel_shape", &[5, 5]), ints("pads", &[p, p, p, p])],
                );
                g.node("Relu", &[], vec![]);
                g.node(
                    "MaxPool",
                    &[],
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                );
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "ONNX export covers mlp and lenet, not {other}"
            )));
        }
    }
    // Both end in the same three dense layers.
    g.node("Flatten", &[], vec![int("axis", 1)]);
    for (i, layer) in ["fc1", "fc2", "fc3"].iter().enumerate() {
        add(&mut g, layer)?;
        gemm(&mut g, layer);
        if i < 2 {
            g.node("Relu", &[], vec![]);
        }
    }

    // Name the output.
    let last = g.nodes.last_mut().expect("at least one node");
    last.output = vec!["logits".into()];
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "nnmark".into(),
        producer_version: nnmark::VERSION.into(),
        graph: Some(GraphProto {
            node: g.nodes,
            name: format!("{}-{}", spec.architecture, meta.dataset),
            initializer: g.initializers,
            input: vec![value_info(
                "input",
                &[
                    None,
                    Some(s.channels as i64),
                    Some(s.height as i64),
                    Some(s.width as i64),
                ],
            )],
            output: vec![value_info("logits", &[None, Some(spec.num_classes as i64)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

/// Exports the weights file `model` as ONNX to `out` (written atomically).
pub fn export(model: &Path, out: &Path) -> Result<String> {
    let bytes = to_onnx(model)?;
    nnmark::io::write_atomic(out, &bytes, None)?;
    Ok(nnmark::io::sha256_hex(&bytes))
}
