"""python -m prnas.export: TorchScript and ONNX files that match PyTorch at any batch size,
carry their preprocessing, and are only written once verified."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import torch

from prnas import model_file
from prnas.export import ExportError, export
from prnas.export.__main__ import main as export_main
from prnas.model_file import NetworkSpec, load_model, read
from prnas.nn.eval_net import EvalNetwork, count_parameters
from prnas.presets import load_genotype

HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model file of DL1 (with auxiliary head) whose BN statistics are not the identity."""
    torch.manual_seed(0)
    genotype = load_genotype("prdarts-dl1")
    net = EvalNetwork(genotype, channels=4, layers=3, num_classes=7, in_channels=3)
    net.train()
    with torch.no_grad():
        for _ in range(3):  # move BN running statistics away from 0/1
            net(torch.randn(8, 3, 12, 12) * 2 + 0.5)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    spec = NetworkSpec(channels=4, layers=3, num_classes=7, in_channels=3, input_size=12,
                       auxiliary=True)
    model_file.save(path, net, genotype, spec, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                    classes=[f"c{i}" for i in range(7)])
    return path


def _reference(path, x):
    with torch.no_grad():
        return load_model(path)(x)[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch marks TorchScript deprecated
def test_torchscript_export_matches_at_other_batch_sizes(model, tmp_path, capsys):
    out = tmp_path / "net.ts"
    assert export_main([str(model), "--format", "torchscript", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["max_abs_diff"] <= 1e-4 and report["batches"] == [1, 3]
    extra = {"prnas.json": ""}
    loaded = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["prnas.json"])
    assert meta["classes"] == [f"c{i}" for i in range(7)] and meta["input"]["size"] == 12
    assert meta["input"]["mean"] == [0.5, 0.4, 0.3]
    x = torch.randn(5, 3, 12, 12)
    assert torch.allclose(loaded(x), _reference(model, x), atol=1e-5)
    # No auxiliary head in the exported graph: exactly the inference parameters.
    assert sum(p.numel() for p in loaded.parameters()) == count_parameters(load_model(model))
    # An existing file is never replaced silently.
    before = out.read_bytes()
    assert export_main([str(model), "--format", "torchscript", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before


@pytest.mark.skipif(not HAS_ONNX, reason="onnx, onnxscript and onnxruntime not installed "
                    "(pip install -e '.[export]')")
@pytest.mark.slow
def test_onnx_export_runs_in_onnxruntime_with_dynamic_batch(model, tmp_path, capsys):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "net.onnx"
    assert export_main([str(model), "--format", "onnx", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "onnx" and report["max_abs_diff"] <= 1e-4
    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["prnas.json"])
    assert meta["input"]["name"] == "input" and meta["genotype"] == "prdarts-dl1"
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(6, 3, 12, 12)
    got = torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])
    assert torch.allclose(got, _reference(model, x), atol=1e-4)


def test_missing_onnx_packages_say_how_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if absent
    with pytest.raises(ExportError, match=r'onnxruntime.*pip install -e "\.\[export\]"'):
        export(read(model), "onnx", tmp_path / "x.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_failed_check_writes_nothing(model, tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export(read(model), "torchscript", tmp_path / "x.ts", tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
