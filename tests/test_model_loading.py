"""load_model: random specs, our checkpoints (full and LoRA), HF folders and the Hub (loopback)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import Sam2VideoModel

from napari_cellsam2.model.checkpoint import (
    CELLSAM2_JSON,
    read_checkpoint_info,
    save_adapter_checkpoint,
    save_model_checkpoint,
)
from napari_cellsam2.model.heads import attach_centre_head
from napari_cellsam2.model.loading import (
    LoadedModel,
    ModelNotAvailableError,
    ModelSpecError,
    load_model,
)
from napari_cellsam2.model.tiny import build_random_model, tiny_config
from sam2_reference import track_point

LORA_TARGETS = ["attn.qkv", "attn.proj", "q_proj", "k_proj", "v_proj", "o_proj"]
POINT = (90.0, 150.0)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    return torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny", "cpu")


def test_random_specs_are_labelled_and_reproducible(tiny):
    assert tiny.kind == "tiny" and tiny.is_random and "RANDOM" in tiny.description
    assert tiny.image_size == 256 and tiny.device == torch.device("cpu")
    assert not tiny.model.training and tiny.model.dtype == torch.float32
    assert same_weights(tiny.model, build_random_model(tiny_config(), seed=0))


def test_full_checkpoint_round_trip(tiny, video, tmp_path):
    model = build_random_model(tiny_config(), seed=5)  # "fine-tuned": differs from tiny
    folder = save_model_checkpoint(model, tmp_path / "ckpt", {"epochs": 3}, base_spec="tiny")
    assert sorted(p.name for p in folder.iterdir()) == [
        CELLSAM2_JSON,
        "config.json",
        "model.safetensors",
    ]
    info = read_checkpoint_info(folder)
    assert info["kind"] == "full" and info["base"] == "tiny" and info["meta"] == {"epochs": 3}
    assert info["image_size"] == 256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers

    loaded = load_model(folder, "cpu")
    # fine-tuned from random weights: the label survives the checkpoint (issue 11)
    assert loaded.kind == "checkpoint" and loaded.is_random and "RANDOM" in loaded.description
    assert loaded.info["meta"] == {"epochs": 3}
    assert same_weights(loaded.model, model)
    assert not same_weights(model, tiny.model)
    expected = track_point(model, video, POINT)
    torch.testing.assert_close(track_point(loaded.model, video, POINT), expected, rtol=0, atol=0)

    # saving again over the same folder replaces it atomically
    save_model_checkpoint(tiny.model, folder, {"epochs": 4})
    again = load_model(folder, "cpu")
    assert again.info["meta"] == {"epochs": 4} and same_weights(again.model, tiny.model)
    assert not again.is_random  # no random base recorded


def test_checkpoint_save_validates_input(tiny, tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_model_checkpoint(tiny.model, tmp_path / "x", {"bad": object()})
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="save_adapter_checkpoint"):
        save_adapter_checkpoint(tiny.model, tmp_path / "y", base_spec="tiny")
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        save_model_checkpoint(tiny.model, tmp_path / "file")


def test_lora_adapter_round_trip(video, tmp_path):
    peft_model = get_peft_model(
        load_model("tiny", "cpu").model, LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS)
    )
    with torch.no_grad():  # lora_B starts at zero; make the adapter change the model
        gen = torch.Generator().manual_seed(1)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    peft_model.eval()
    expected = track_point(peft_model, video, POINT)

    folder = save_adapter_checkpoint(peft_model, tmp_path / "lora", "tiny", {"r": 4})
    assert {"adapter_model.safetensors", "adapter_config.json", CELLSAM2_JSON} <= {
        p.name for p in folder.iterdir()
    }
    assert read_checkpoint_info(folder)["kind"] == "lora"

    merged = load_model(folder, "cpu")
    assert merged.kind == "lora" and isinstance(merged.model, Sam2VideoModel)
    unmerged = load_model(folder, "cpu", merge_lora=False)
    assert hasattr(unmerged.model, "peft_config")
    torch.testing.assert_close(track_point(unmerged.model, video, POINT), expected, rtol=0, atol=0)
    torch.testing.assert_close(track_point(merged.model, video, POINT), expected, atol=1e-5, rtol=0)
    base_only = track_point(load_model("tiny", "cpu").model, video, POINT)
    assert (base_only - expected).abs().max() > 1e-3  # the adapter really matters

    # base= overrides the base recorded in cellsam2.json
    other = save_model_checkpoint(build_random_model(tiny_config(), seed=5), tmp_path / "other")
    rebased = load_model(folder, "cpu", base=str(other))
    assert rebased.kind == "lora" and not same_weights(rebased.model, merged.model)
    # an adapter that does not fit the base is an error, not a silently partial adapter
    config = tiny_config()
    config.memory_attention_num_layers = 2
    deeper = save_model_checkpoint(build_random_model(config), tmp_path / "deeper")
    with (
        warnings.catch_warnings(),  # peft itself only warns about the missing adapter keys
        pytest.raises(ModelSpecError, match=r"does not fit.*missing adapter weights"),
    ):
        warnings.simplefilter("ignore", UserWarning)
        load_model(folder, "cpu", base=str(deeper))


def test_lora_without_base_needs_base_argument(tmp_path):
    peft_model = get_peft_model(
        load_model("tiny", "cpu").model, LoraConfig(r=2, target_modules=["q_proj"])
    )
    folder = save_adapter_checkpoint(peft_model, tmp_path / "lora", "tiny")
    info = json.loads((folder / CELLSAM2_JSON).read_text())
    info["base"] = None
    (folder / CELLSAM2_JSON).write_text(json.dumps(info))
    with pytest.raises(ModelSpecError, match="pass base="):
        load_model(folder, "cpu")
    assert load_model(folder, "cpu", base="tiny").kind == "lora"


def test_bad_specs_give_clear_errors(tmp_path):
    with pytest.raises(ModelSpecError, match="not found"):
        load_model(tmp_path / "missing" / "model.pt", "cpu")
    with pytest.raises(ModelSpecError, match=r"neither cellsam2\.json"):
        load_model(tmp_path, "cpu")
    (tmp_path / CELLSAM2_JSON).write_text('{"kind": "weird"}')
    with pytest.raises(ValueError, match="'kind' must be"):
        load_model(tmp_path, "cpu")


@pytest.mark.parametrize(
    ("kind", "damaged"),
    [("full", "model.safetensors"), ("full", "heads.safetensors"),
     ("lora", "adapter_model.safetensors"), ("full", CELLSAM2_JSON)],
)  # fmt: skip
def test_a_damaged_checkpoint_file_is_a_clear_error_naming_it(tmp_path, kind, damaged):
    """Checkpoints are untrusted input: a truncated file was a bare SafetensorError traceback
    (and a cellsam2.json holding a list an AttributeError)."""
    if kind == "full":
        model = build_random_model(tiny_config())
        attach_centre_head(model)
        folder = save_model_checkpoint(model, tmp_path / "ckpt")
    else:
        peft_model = get_peft_model(
            load_model("tiny", "cpu").model, LoraConfig(r=2, target_modules=["q_proj"])
        )
        folder = save_adapter_checkpoint(peft_model, tmp_path / "ckpt", "tiny")
    path = folder / damaged
    if damaged == CELLSAM2_JSON:
        path.write_text("[]")
    else:
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=re.escape(str(folder))):
        load_model(folder, "cpu")


def _adapter(folder: Path, base: str) -> Path:
    peft_model = get_peft_model(
        load_model("tiny", "cpu").model, LoraConfig(r=2, target_modules=["q_proj"])
    )
    return save_adapter_checkpoint(peft_model, folder, base)


def test_adapter_bases_that_loop_are_named_not_a_recursion_error(tmp_path):
    a = _adapter(tmp_path / "a", "tiny")
    b = _adapter(tmp_path / "b", str(a))
    info = json.loads((a / CELLSAM2_JSON).read_text())
    (a / CELLSAM2_JSON).write_text(json.dumps({**info, "base": str(b)}))
    with pytest.raises(ModelSpecError, match="base model cycle"):
        load_model(a, "cpu")


def test_an_unmerged_adapter_saves_its_trained_parameters_again(tmp_path):
    """merge_lora=False is how training goes on from an adapter; saving it dropped the bare
    parameters trained beside the adapter (trained_parameters.safetensors)."""
    from napari_cellsam2.training.config import ScratchConfig
    from napari_cellsam2.training.params import apply_lora

    peft_model = apply_lora(load_model("tiny", "cpu").model, ScratchConfig())
    base = peft_model.get_base_model()
    with torch.no_grad():
        for name in peft_model.cellsam2_trained_parameters:
            getattr(base, name).add_(0.5)
    first = save_adapter_checkpoint(peft_model, tmp_path / "a", "tiny")
    again = load_model(first, "cpu", merge_lora=False)
    second = save_adapter_checkpoint(again.model, tmp_path / "b", "tiny")
    name = "trained_parameters.safetensors"
    saved = load_file(first / name)
    assert (second / name).is_file() and saved.keys() == load_file(second / name).keys()
    for key, value in load_file(second / name).items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_base_names_labels_and_checkpoint_fields_are_kept_straight(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # a folder named like the random model
    adapter = _adapter(tmp_path / "lora", "tiny")
    assert read_checkpoint_info(adapter)["base"] == "tiny"  # not the folder's path
    trained = save_model_checkpoint(build_random_model(tiny_config()), tmp_path / "trained")
    adapter = _adapter(tmp_path / "lora2", str(trained))
    assert not load_model(adapter, "cpu").is_random
    assert load_model(adapter, "cpu", base="tiny").is_random  # runs on random weights now
    info = json.loads((adapter / CELLSAM2_JSON).read_text())
    (adapter / CELLSAM2_JSON).write_text(json.dumps({**info, "image_size": "512px"}))
    with pytest.raises(ValueError, match="'image_size' must be a multiple of 32"):
        load_model(adapter, "cpu")
    config = json.loads((trained / "config.json").read_text())
    config["memory_attention_feed_forward_hidden_size"] = 32  # shapes no longer fit the file
    (trained / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSpecError, match="not a loadable Sam2VideoModel folder"):
        load_model(trained, "cpu")


def test_a_checkpoint_missing_a_file_it_lists_is_refused(tmp_path):
    """A copy that lost heads.safetensors loaded as plain SAM 2, and one that lost
    trained_parameters.safetensors ran with the base's untrained values, without a word."""
    from napari_cellsam2.training.config import ScratchConfig
    from napari_cellsam2.training.params import apply_lora

    model = build_random_model(tiny_config())
    attach_centre_head(model)
    full = save_model_checkpoint(model, tmp_path / "full")
    (full / "heads.safetensors").unlink()
    with pytest.raises(ModelSpecError, match="lists the heads"):
        load_model(full, "cpu")
    adapter = save_adapter_checkpoint(
        apply_lora(load_model("tiny", "cpu").model, ScratchConfig()), tmp_path / "lora", "tiny"
    )
    (adapter / "trained_parameters.safetensors").unlink()
    with pytest.raises(ModelSpecError, match="lists trained parameters"):
        load_model(adapter, "cpu")


# --- Hugging Face Hub through a loopback server -------------------------------------------


class _Hub:
    """Serves /{repo}/resolve/{revision}/{file} like the Hub does for huggingface_hub."""

    def __init__(self, repos: dict[str, dict[str, bytes]]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _respond(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                repo, file = "/".join(parts[:2]), "/".join(parts[4:])
                if len(parts) < 5 or parts[2] != "resolve" or repo not in hub.repos:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if file not in hub.repos[repo]:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = hub.repos[repo][file]
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._respond(body=False)

            def do_GET(self) -> None:
                self._respond(body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def hub_model() -> Sam2VideoModel:
    return build_random_model(tiny_config(), seed=3)


@pytest.fixture
def hub(hub_model, tmp_path_factory) -> Iterator[_Hub]:
    folder = tmp_path_factory.mktemp("hubrepo")
    hub_model.save_pretrained(folder)
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    server = _Hub({"facebook/sam2.1-hiera-tiny": files, "someone/not-sam": {"README.md": b""}})
    yield server
    server.close()


@pytest.fixture
def hf_env(monkeypatch, tmp_path) -> Path:
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return cache


def test_hub_download_then_offline_from_cache(hub, hub_model, hf_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    loaded = load_model("facebook/sam2.1-hiera-tiny", "cpu")
    assert loaded.kind == "hub" and not loaded.is_random
    assert same_weights(loaded.model, hub_model)
    assert any("model.safetensors" in r for r in hub.requests)
    assert list(hf_env.glob("models--facebook--sam2.1-hiera-tiny/snapshots/*/config.json"))

    hub.close()  # the Hub is gone: the cached copy is used, offline mode or not
    count = len(hub.requests)
    unreachable = load_model("facebook/sam2.1-hiera-tiny", "cpu")
    assert same_weights(unreachable.model, hub_model)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = load_model("facebook/sam2.1-hiera-tiny", "cpu")
    assert cached.kind == "hub" and same_weights(cached.model, hub_model)
    assert len(hub.requests) == count


def test_hub_offline_and_uncached_explains_how_to_get_weights(hf_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as err:
        load_model("facebook/sam2.1-hiera-small", "cpu")
    message = str(err.value)
    assert "offline" in message and str(hf_env) in message
    assert "hf download facebook/sam2.1-hiera-small" in message
    assert "HF_HOME" in message and ".pt" in message


def test_hub_unreachable_and_uncached(hf_env, monkeypatch):
    hub = _Hub({})
    url = hub.url
    hub.close()  # nothing listens on this port any more
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(ModelNotAvailableError, match=r"could not be reached.*hf download"):
        load_model("facebook/sam2.1-hiera-tiny", "cpu")


def test_hub_unknown_repo_and_non_sam_repo(hub, hf_env, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    with pytest.raises(ModelSpecError, match="no model 'nobody/nothing'"):
        load_model("nobody/nothing", "cpu")
    with pytest.raises(ModelSpecError, match=r"has no config\.json"):
        load_model("someone/not-sam", "cpu")


def test_lora_adapter_keeps_trained_heads_and_embeddings(video, tmp_path):
    """scratch.lora_modules_to_save (IoU / object-score heads, no-memory / no-object tokens) are
    trained in full beside the adapters; the adapter folder must restore all of them."""
    from napari_cellsam2.training.config import ScratchConfig
    from napari_cellsam2.training.params import apply_lora

    peft_model = apply_lora(load_model("tiny", "cpu").model, ScratchConfig())
    names = peft_model.cellsam2_trained_parameters
    assert {"no_memory_embedding", "no_object_pointer", "no_memory_positional_encoding"} <= set(
        names
    )
    base = peft_model.get_base_model()
    with torch.no_grad():  # "training" changed only the heads and tokens, not the adapters
        gen = torch.Generator().manual_seed(2)
        for name, param in peft_model.named_parameters():
            if "modules_to_save" in name or name.split(".")[-1] in names:
                param.add_(torch.randn(param.shape, generator=gen) * 0.5)
    peft_model.eval()
    expected = track_point(peft_model, video, POINT)
    folder = save_adapter_checkpoint(peft_model, tmp_path / "lora", "tiny")
    assert (folder / "trained_parameters.safetensors").is_file()
    assert read_checkpoint_info(folder)["random_weights"]  # fine-tuned from random weights

    merged = load_model(folder, "cpu")
    assert merged.is_random and "RANDOM" in merged.description
    for name in names:
        assert torch.equal(getattr(merged.model, name), getattr(base, name)), name
    head = merged.model.mask_decoder.iou_prediction_head.proj_out.weight
    trained = base.mask_decoder.iou_prediction_head.modules_to_save["default"].proj_out.weight
    assert torch.equal(head, trained)
    torch.testing.assert_close(track_point(merged.model, video, POINT), expected, atol=1e-5, rtol=0)
    base_only = track_point(load_model("tiny", "cpu").model, video, POINT)
    assert (base_only - expected).abs().max() > 1e-3
