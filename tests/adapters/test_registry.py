"""The adapter registry and `refinery adapters`, on real LoRA adapters of the tiny model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from adapters.registry import (
    AdapterRejected,
    InvalidTransition,
    NotFound,
    Registry,
    RegistryError,
    check_loadable,
    same_base_model,
)
from tests.fixtures import REPO



def _make_adapter(model, out: Path, seed: int, targets=("q_proj", "v_proj")) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    # init_lora_weights=False: random A and B, so the adapter changes outputs and weights differ.
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=list(targets), init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lora(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Adapter directories: two on the tiny model, one on a wider model claiming the same base."""
    from transformers import AutoConfig, AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora")
    dirs = {}
    for key, seed in (("a", 1), ("b", 2)):
        dirs[key] = _make_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), root / key, seed)
    # Same name as the tiny model, other hidden size: only a shape check can tell.
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 48, 96
    wide = AutoModelForCausalLM.from_config(config)
    wide.name_or_path = str(tiny_model_dir)
    dirs["wide"] = _make_adapter(wide, root / "wide", 3)
    return dirs


@pytest.fixture()
def reg(tmp_path, tiny_model_dir) -> Registry:
    return Registry(tmp_path / "adapters", base_model_id=str(tiny_model_dir))


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _statuses(reg: Registry, name: str) -> dict[str, str]:
    return {v.version_id: v.status for v in reg.list(name)}


# ----- registering


def test_register_numbers_versions_and_records_metadata(reg, lora, tiny_model_dir):
    v1 = reg.register(lora["a"], "refinery", principles=["p1", "p2"], dataset_hash="abc123",
                      report={"win_rate": 0.7}, notes="first", actor="alice")
    v2 = reg.register(lora["b"], "refinery")
    other = reg.register(lora["a"], "other")
    assert (v1, v2, other) == ("refinery@v1", "refinery@v2", "other@v1")

    info = reg.show(v1)
    assert info.status == "candidate" and info.canary_share is None
    assert info.principles == ("p1", "p2") and info.dataset_hash == "abc123"
    assert info.report == {"win_rate": 0.7} and info.notes == "first" and info.created_by == "alice"
    assert info.base_model == str(tiny_model_dir)
    weights = (lora["a"] / "adapter_model.safetensors").read_bytes()
    assert info.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert info.weights_bytes == len(weights)
    assert info.lora["r"] == 2 and info.lora["target_modules"] == ["q_proj", "v_proj"]
    assert reg.show(v2).weights_sha256 != info.weights_sha256

    # What is on disk: exactly the weights, config and metadata (no pickles, nothing else).
    assert sorted(p.name for p in info.path.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors", "metadata.json"]
    meta = json.loads((info.path / "metadata.json").read_text())
    assert meta["version_id"] == v1 and meta["version"] == 1 and meta["weights_sha256"] == info.weights_sha256
    reg.verify(v1)

    audit = reg.audit()
    assert [(e["action"], e["version"], e["after"]) for e in audit if e["action"] == "register"] == [
        ("register", v1, "candidate"), ("register", v2, "candidate"), ("register", other, "candidate")]
    assert audit[-3]["actor"] == "alice"


def test_report_file_is_copied_in(reg, lora, tmp_path):
    report = tmp_path / "eval.json"
    report.write_text('{"score": 1}')
    v = reg.show(reg.register(lora["a"], "x", report=report))
    assert v.report == "report.json" and (v.path / "report.json").read_text() == '{"score": 1}'


def test_verify_detects_weights_changed_on_disk(reg, lora):
    v = reg.show(reg.register(lora["a"], "x"))
    (v.path / "adapter_model.safetensors").write_bytes((lora["b"] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(AdapterRejected, match="changed on disk"):
        reg.verify(v.version_id)


@pytest.mark.parametrize("name", ["", "a@v1", "a/b", "../x", "-x", "x" * 65, "a b"])
def test_register_refuses_bad_names(reg, lora, name):
    with pytest.raises(RegistryError, match="invalid adapter name"):
        reg.register(lora["a"], name)


def _assert_nothing_stored(reg: Registry) -> None:
    assert reg.list() == []
    assert [p for p in reg.root.iterdir() if p.name not in ("state.json", "audit.jsonl", ".lock", "engine_limits.json")] == []


@pytest.mark.parametrize("fname", ["adapter_model.bin", "training_args.bin", "optimizer.pt", "x.pkl", "sub/state.ckpt"])
def test_refuses_pickled_files(reg, lora, tmp_path, fname):
    src = _copy(lora["a"], tmp_path / "src")
    (src / fname).parent.mkdir(parents=True, exist_ok=True)
    (src / fname).write_bytes(b"\x80\x04K\x01.")  # a real pickle of the integer 1
    with pytest.raises(AdapterRejected, match="pickled"):
        reg.register(src, "x")
    _assert_nothing_stored(reg)
    assert reg.audit()[-1]["action"] == "refuse" and "pickled" in reg.audit()[-1]["reason"]


def test_refuses_directory_with_only_pickled_weights(reg, lora, tmp_path):
    src = _copy(lora["a"], tmp_path / "src")
    os.rename(src / "adapter_model.safetensors", src / "adapter_model.bin")
    with pytest.raises(AdapterRejected, match="pickled"):
        reg.register(src, "x")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_refuses_corrupt_safetensors(reg, lora, tmp_path, damage):
    src = _copy(lora["a"], tmp_path / "src")
    path = src / "adapter_model.safetensors"
    data = path.read_bytes()
    if damage == "truncate":
        data = data[: len(data) - 100]
    elif damage == "garbage":
        data = os.urandom(len(data))
    else:  # header claims a huge length
        data = (2**40).to_bytes(8, "little") + data[8:]
    path.write_bytes(data)
    with pytest.raises(AdapterRejected, match="not a readable safetensors file"):
        reg.register(src, "x")
    _assert_nothing_stored(reg)


def test_refuses_nan_weights(reg, lora, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src = _copy(lora["a"], tmp_path / "src")
    tensors = load_file(src / "adapter_model.safetensors")
    key = next(iter(tensors))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, src / "adapter_model.safetensors")
    assert torch.isnan(load_file(src / "adapter_model.safetensors")[key]).any()
    with pytest.raises(AdapterRejected, match="NaN"):
        reg.register(src, "x")


@pytest.mark.parametrize("edit,match", [
    (lambda c: "not json", "not valid JSON"),
    (lambda c: {**c, "peft_type": "IA3"}, "only LoRA"),
    (lambda c: {**c, "r": "abc"}, "r must be a positive integer"),
    (lambda c: {**c, "r": 0}, "r must be a positive integer"),
])
def test_refuses_bad_config(reg, lora, tmp_path, edit, match):
    src = _copy(lora["a"], tmp_path / "src")
    config = json.loads((src / "adapter_config.json").read_text())
    new = edit(config)
    (src / "adapter_config.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(AdapterRejected, match=match):
        reg.register(src, "x")


def test_refuses_missing_files(reg, lora, tmp_path):
    src = _copy(lora["a"], tmp_path / "src")
    (src / "adapter_config.json").unlink()
    with pytest.raises(AdapterRejected, match="no adapter_config.json"):
        reg.register(src, "x")
    with pytest.raises(AdapterRejected, match="not a directory"):
        reg.register(tmp_path / "nowhere", "x")


def test_refuses_other_base_model(tmp_path, lora, tiny_model_dir):
    reg = Registry(tmp_path / "adapters", base_model_id="SmolLM2-135M-Instruct")
    with pytest.raises(AdapterRejected, match=f"adapter was trained on {tiny_model_dir}, this server serves SmolLM2-135M-Instruct"):
        reg.register(lora["a"], "x")
    _assert_nothing_stored(reg)


def test_base_model_recorded_by_server_applies_to_later_opens(tmp_path, lora):
    Registry(tmp_path / "adapters", base_model_id="SmolLM2-135M-Instruct")  # the server
    cli = Registry(tmp_path / "adapters")  # the CLI, told nothing
    assert cli.base_model_id == "SmolLM2-135M-Instruct"
    with pytest.raises(AdapterRejected, match="this server serves SmolLM2-135M-Instruct"):
        cli.register(lora["a"], "x")


def test_engine_limits_recorded_by_the_server_refuse_a_higher_rank_anywhere(tmp_path, lora, tiny_model_dir):
    server = Registry(tmp_path / "adapters", base_model_id=str(tiny_model_dir))
    server.record_engine_limits({"max_lora_rank": 1})  # the adapters here have r=2
    cli = Registry(tmp_path / "adapters")
    with pytest.raises(AdapterRejected, match="LoRA rank 2 is above the serving engine's max_lora_rank 1"):
        cli.register(lora["a"], "x")
    _assert_nothing_stored(cli)
    server.record_engine_limits({"max_lora_rank": 16})
    assert cli.register(lora["a"], "x") == "x@v1"


def test_same_base_model_compares_last_component():
    assert same_base_model("/data/models/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert same_base_model("smollm2-135m-instruct/", "SmolLM2-135M-Instruct")
    assert not same_base_model("/data/models/tiny", "SmolLM2-135M-Instruct")


# ----- status transitions


def test_promote_canary_rollback_and_audit(reg, lora):
    v1, v2, v3 = (reg.register(lora[k], "r") for k in ("a", "b", "a"))

    assert [(c.version_id, c.before, c.after) for c in reg.promote(v1, actor="op")] == [(v1, "candidate", "active")]
    assert reg.active("r").version_id == v1 and reg.canary_of("r") is None
    assert reg.promote(v1) == []  # already active: nothing changes, nothing audited
    n_audit = len(reg.audit())

    changes = reg.canary(v2, 0.1)
    assert [(c.version_id, c.after, c.share_after) for c in changes] == [(v2, "canary", 0.1)]
    assert reg.canary_of("r").canary_share == 0.1
    # A second canary replaces the first, which goes back to candidate.
    changes = reg.canary(v3, 0.2)
    assert [(c.version_id, c.before, c.after) for c in changes] == [(v2, "canary", "candidate"), (v3, "candidate", "canary")]
    assert _statuses(reg, "r") == {v1: "active", v2: "candidate", v3: "canary"}
    # Changing the share of the running canary.
    assert [(c.share_before, c.share_after) for c in reg.canary(v3, 0.5)] == [(0.2, 0.5)]

    # rollback with a canary running ends the canary and leaves the active version alone.
    changes = reg.rollback("r", reason="worse on thumbs")
    assert [(c.version_id, c.before, c.after) for c in changes] == [(v3, "canary", "retired")]
    assert _statuses(reg, "r") == {v1: "active", v2: "candidate", v3: "retired"}
    assert reg.show(v3).canary_share is None and reg.show(v3).status_reason == "worse on thumbs"

    # Promoting the canary makes it active and it stops being canary; the old active retires.
    reg.canary(v2, 0.3)
    changes = reg.promote(v2)
    assert [(c.version_id, c.before, c.after) for c in changes] == [(v1, "active", "retired"), (v2, "canary", "active")]
    assert reg.canary_of("r") is None and reg.show(v2).canary_share is None

    # rollback without canary: back to the previous active version.
    changes = reg.rollback("r")
    assert [(c.version_id, c.before, c.after) for c in changes] == [(v2, "active", "retired"), (v1, "retired", "active")]

    audit = reg.audit()[n_audit:]
    assert [(e["action"], e["version"], e["before"], e["after"]) for e in audit] == [
        ("canary", v2, "candidate", "canary"),
        ("canary", v2, "canary", "candidate"), ("canary", v3, "candidate", "canary"),
        ("canary", v3, "canary", "canary"),
        ("rollback", v3, "canary", "retired"),
        ("canary", v2, "candidate", "canary"),
        ("promote", v1, "active", "retired"), ("promote", v2, "canary", "active"),
        ("rollback", v2, "active", "retired"), ("rollback", v1, "retired", "active"),
    ]
    assert audit[4]["reason"] == "worse on thumbs"
    assert all(e["time"] and e["actor"] for e in audit)
    # The entries of one operation share an op id; different operations do not.
    assert audit[1]["op"] == audit[2]["op"] != audit[3]["op"]


def test_rollback_walks_back_through_history(reg, lora):
    v1, v2, v3 = (reg.register(lora[k], "r") for k in ("a", "b", "a"))
    for v in (v1, v2, v3):
        reg.promote(v)
    assert _statuses(reg, "r") == {v1: "retired", v2: "retired", v3: "active"}
    reg.rollback("r")
    assert reg.active("r").version_id == v2
    reg.rollback("r")  # not back to v3: a rollback does not undo the previous rollback
    assert reg.active("r").version_id == v1
    with pytest.raises(InvalidTransition, match="nothing to roll back to"):
        reg.rollback("r")
    assert reg.active("r").version_id == v1  # a refused operation changes nothing
    # Re-promoting a rolled-back (retired) version works, and rollback then returns to v1.
    reg.promote(v3)
    reg.rollback("r", reject=True)
    assert _statuses(reg, "r") == {v1: "active", v2: "retired", v3: "rejected"}


def test_rollback_with_nothing_to_roll_back(reg, lora):
    v1 = reg.register(lora["a"], "r")
    with pytest.raises(InvalidTransition, match="no active version or canary"):
        reg.rollback("r")
    with pytest.raises(InvalidTransition):
        reg.rollback("unknown")
    assert reg.show(v1).status == "candidate"


def test_retire_and_reject(reg, lora):
    v1, v2, v3 = (reg.register(lora[k], "r") for k in ("a", "b", "a"))
    reg.promote(v1)
    reg.promote(v2)
    # Rejecting the active version brings the previous one back (what the server does when a
    # promoted version does not load).
    changes = reg.reject(v2, "does not load: size mismatch")
    assert [(c.version_id, c.after) for c in changes] == [(v1, "active"), (v2, "rejected")]
    assert reg.show(v2).status_reason == "does not load: size mismatch"
    assert reg.reject(v2, "again") == []
    with pytest.raises(InvalidTransition, match="rejected"):
        reg.promote(v2)
    with pytest.raises(InvalidTransition, match="rejected"):
        reg.canary(v2, 0.1)
    with pytest.raises(InvalidTransition, match="final"):
        reg.retire(v2)
    with pytest.raises(InvalidTransition, match="only a candidate or retired"):
        reg.canary(v1, 0.1)  # already active

    # Retiring the active version leaves the name without one.
    reg.canary(v3, 0.1)
    reg.retire(v1)
    assert reg.active("r") is None and reg.canary_of("r").version_id == v3
    reg.retire(v3)
    assert _statuses(reg, "r") == {v1: "retired", v2: "rejected", v3: "retired"}
    assert reg.retire(v3) == []
    # A retired version can come back.
    reg.promote(v1)
    assert reg.active("r").version_id == v1


@pytest.mark.parametrize("share", [0, 1, -0.1, 1.5, float("nan"), True])
def test_canary_share_must_be_strictly_between_0_and_1(reg, lora, share):
    v = reg.register(lora["a"], "r")
    with pytest.raises(RegistryError, match="between 0 and 1"):
        reg.canary(v, share)
    assert reg.show(v).status == "candidate"


def test_unknown_versions(reg):
    with pytest.raises(NotFound, match="expected NAME@vN"):
        reg.show("refinery")
    with pytest.raises(NotFound):
        reg.promote("r@v9")
    assert reg.get("r@v9") is None and reg.active("r") is None


# ----- resolving a request's model


def test_resolve(reg, lora):
    v1, v2, v3 = (reg.register(lora[k], "r") for k in ("a", "b", "a"))
    assert reg.resolve("r") is None  # only candidates: NAME is not served yet
    assert reg.resolve(v1).version.version_id == v1  # pinned candidates are servable
    reg.promote(v1)
    res = reg.resolve("r")
    assert (res.pinned, res.version.version_id, res.canary, res.canary_share) == (False, v1, None, 0.0)
    assert res.choose("anyone").version_id == v1

    reg.canary(v2, 0.25)
    res = reg.resolve("r")
    assert res.version.version_id == v1 and res.canary.version_id == v2 and res.canary_share == 0.25
    picks = [res.choose(f"user{i}").version_id for i in range(2000)]
    assert 0.2 < picks.count(v2) / len(picks) < 0.3
    # Sticky: the same user always gets the same version.
    assert all(res.choose("user7").version_id == picks[7] for _ in range(20))

    pinned = reg.resolve(v2)
    assert pinned.pinned and pinned.version.version_id == v2 and pinned.canary is None
    reg.promote(v2)
    assert reg.resolve(v1).version.status == "retired"  # retired versions stay pinnable
    reg.reject(v3, "bad")
    assert reg.resolve(v3) is None
    for unknown in ("nope", "r@v99", "", "r@v0", "SmolLM2-135M-Instruct"):
        assert reg.resolve(unknown) is None


def test_resolve_canary_without_active_leaves_rest_to_base(reg, lora):
    v1 = reg.register(lora["a"], "r")
    reg.canary(v1, 0.5)
    res = reg.resolve("r")
    assert res.version is None and res.canary.version_id == v1
    picks = {res.choose(f"u{i}") is None for i in range(200)}
    assert picks == {True, False}  # some requests get the base model, some the canary


# ----- change token, sharing between processes


def test_state_token_changes_on_every_change_and_only_then(reg, lora, tmp_path):
    t0 = reg.state_token()
    v1 = reg.register(lora["a"], "r")
    t1 = reg.state_token()
    reg.list(), reg.resolve("r"), reg.show(v1)
    assert reg.state_token() == t1 != t0
    other = Registry(reg.root)  # e.g. the CLI, while the server holds `reg`
    assert other.state_token() == t1
    other.promote(v1)
    assert reg.state_token() not in (t0, t1)
    assert reg.active("r").version_id == v1  # no caching: the server sees the CLI's change
    t2 = reg.state_token()
    reg.promote(v1)  # no-op
    assert reg.state_token() == t2


# ----- crashes and concurrency


def test_leftover_temp_dirs_are_ignored_and_cleaned(reg, lora):
    v1 = reg.register(lora["a"], "r")
    # A registration killed mid-copy: temp dir of a process that no longer exists.
    dead = reg.root / ".tmp-99999999-abc"
    dead.mkdir()
    (dead / "adapter_model.safetensors").write_bytes(b"partial")
    half_state = reg.root / ".tmp-99999999-state"
    half_state.write_text('{"versions": {')
    # A registration in progress in a live process (this one) must not be touched.
    live = reg.root / f".tmp-{os.getpid()}-xyz"
    live.mkdir()
    assert [v.version_id for v in reg.list()] == [v1]

    fresh = Registry(reg.root)
    assert not dead.exists() and not half_state.exists() and live.exists()
    assert [v.version_id for v in fresh.list()] == [v1]
    assert fresh.register(lora["b"], "r") == "r@v2"


def test_crash_after_rename_before_state_is_recovered(reg, lora, monkeypatch):
    v1 = reg.register(lora["a"], "r")
    reg.promote(v1)

    def crash(*a, **k):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr("adapters.registry.registry.write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        reg.register(lora["b"], "r")
    monkeypatch.undo()
    # The directory was renamed into place but state.json never heard of it.
    assert (reg.root / "r@v2").is_dir() and [v.version_id for v in reg.list()] == [v1]

    fresh = Registry(reg.root)
    assert _statuses(fresh, "r") == {v1: "active", "r@v2": "candidate"}
    assert fresh.audit()[-1]["action"] == "recover"
    assert fresh.register(lora["a"], "r") == "r@v3"
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp-")]


def test_crash_while_writing_state_keeps_old_state(reg, lora, monkeypatch):
    v1, v2 = reg.register(lora["a"], "r"), reg.register(lora["b"], "r")
    reg.promote(v1)
    before = (reg.root / "state.json").read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("adapters.files.os.replace", crash)
    with pytest.raises(OSError):
        reg.promote(v2)
    monkeypatch.undo()
    assert (reg.root / "state.json").read_text() == before
    assert _statuses(Registry(reg.root), "r") == {v1: "active", v2: "candidate"}
    assert not [p for p in reg.root.iterdir() if p.name.startswith(".tmp-")]


def test_crash_during_validation_leaves_nothing(reg, lora, monkeypatch):
    def crash(path):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr("adapters.registry.validate.validate_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        reg.register(lora["a"], "r")
    _assert_nothing_stored(reg)


def test_racing_registrations_in_threads_get_distinct_versions(tmp_path, lora, tiny_model_dir, monkeypatch):
    import time

    root = tmp_path / "adapters"
    Registry(root, base_model_id=str(tiny_model_dir))
    # Widen the window between reading the state and recording the new version, so that
    # without the lock the writers would overlap there every time.
    next_number = Registry._next_number

    def slow_next_number(self, name, state):
        n = next_number(self, name, state)
        time.sleep(0.05)
        return n

    monkeypatch.setattr(Registry, "_next_number", slow_next_number)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def worker(i):
        try:
            r = Registry(root)  # one object per thread, like separate processes
            barrier.wait()
            results.append(r.register(lora["a" if i % 2 else "b"], "r"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == ["r@v1", "r@v2", "r@v3", "r@v4"]
    # Each registration was recorded by its own writer, none recovered later as an orphan.
    assert [e["action"] for e in Registry(root).audit() if e.get("version")] == ["register"] * 4
    assert sorted(_statuses(Registry(root), "r")) == sorted(results)


def test_racing_registrations_in_processes_through_the_cli(tmp_path, lora):
    env = {**os.environ, "REFINERY_DATA_DIR": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", "adapters", "register", str(lora[k]), "--name", "r"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    ids = sorted(o[0].strip().splitlines()[-1] for o in outs)
    assert ids == ["r@v1", "r@v2"]
    assert [v.version_id for v in Registry(tmp_path / "adapters").list()] == ids


# ----- loading onto a model


def test_check_loadable(reg, lora, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ok = reg.show(reg.register(lora["a"], "r"))
    wide = reg.show(reg.register(lora["wide"], "r"))  # same base name, so registration passes
    check_loadable(ok.path, model)
    with pytest.raises(AdapterRejected, match="size mismatch"):
        check_loadable(wide.path, model)
    # The check never touches the serving model: same parameters, no LoRA layers injected.
    after = model.state_dict()
    assert after.keys() == before.keys() and all((after[k] == before[k]).all() for k in before)
    assert not any("lora" in name for name, _ in model.named_modules())

    served = PeftModel.from_pretrained(model, ok.path, adapter_name="r@v1")
    check_loadable(ok.path, served)
    with pytest.raises(AdapterRejected):
        check_loadable(wide.path, served)
    assert list(served.peft_config) == ["r@v1"]


def test_check_loadable_rejects_unknown_target_modules(reg, lora, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    src = _copy(lora["a"], tmp_path / "src")
    config = json.loads((src / "adapter_config.json").read_text())
    config["target_modules"] = ["no_such_proj"]
    (src / "adapter_config.json").write_text(json.dumps(config))
    v = reg.show(reg.register(src, "r"))
    with pytest.raises(AdapterRejected, match="does not fit"):
        check_loadable(v.path, AutoModelForCausalLM.from_pretrained(tiny_model_dir))


def test_check_loadable_rejects_missing_lora_weights(reg, lora, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    src = _copy(lora["a"], tmp_path / "src")
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({k: v for k, v in tensors.items() if "v_proj" not in k}, src / "adapter_model.safetensors")
    v = reg.show(reg.register(src, "r"))  # the file itself is fine; only the model can tell
    with pytest.raises(AdapterRejected, match="LoRA weights are missing"):
        check_loadable(v.path, AutoModelForCausalLM.from_pretrained(tiny_model_dir))


# ----- CLI


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from service.cli import app

    monkeypatch.setenv("REFINERY_DATA_DIR", str(tmp_path))
    runner = CliRunner()

    def run(*args, ok=True):
        result = runner.invoke(app, ["adapters", *map(str, args)])
        assert (result.exit_code == 0) == ok, result.output
        return result

    return run


def test_cli_lifecycle(cli, lora, tmp_path):
    out = cli("register", lora["a"], "--name", "refinery", "--principle", "p1", "--principle", "p2", "--dataset-hash", "h1")
    assert out.stdout.strip().splitlines()[-1] == "refinery@v1"
    assert cli("register", lora["b"], "--name", "refinery").stdout.strip().splitlines()[-1] == "refinery@v2"

    assert "refinery@v1: candidate -> active" in cli("promote", "refinery@v1").stdout
    assert "refinery@v2: candidate -> canary (share 0.1)" in cli("canary", "refinery@v2", "--share", "0.1").stdout

    table = cli("list").stdout.splitlines()
    assert table[0].split() == ["VERSION", "STATUS", "SHARE", "CREATED", "PRINCIPLES", "BASE", "MODEL"]
    row1 = next(line for line in table if line.startswith("refinery@v1 "))
    row2 = next(line for line in table if line.startswith("refinery@v2 "))
    assert row1.split()[1:3] == ["active", "-"] and "p1,p2" in row1
    assert row2.split()[1:3] == ["canary", "0.1"]

    shown = json.loads(cli("show", "refinery@v1").stdout)
    assert shown["version_id"] == "refinery@v1" and shown["principles"] == ["p1", "p2"] and shown["dataset_hash"] == "h1"
    assert shown["status"] == "active" and len(shown["weights_sha256"]) == 64

    assert "refinery@v2: canary -> retired" in cli("rollback", "refinery").stdout
    cli("promote", "refinery@v2")
    out = cli("rollback", "refinery").stdout
    assert "refinery@v2: active -> retired" in out and "refinery@v1: retired -> active" in out
    assert "refinery@v1: active -> retired" in cli("retire", "refinery@v1").stdout
    reg = Registry(tmp_path / "adapters")
    assert reg.active("refinery") is None
    actions = [e["action"] for e in reg.audit()]
    assert actions.count("register") == 2 and actions[-1] == "retire"
    assert reg.audit()[-1]["actor"].startswith("cli")
    assert json.loads(cli("list", "--json").stdout)[0]["version_id"] == "refinery@v1"


def test_cli_errors_exit_nonzero(cli, lora, tmp_path):
    src = _copy(lora["a"], tmp_path / "pickled")
    (src / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")
    result = cli("register", src, "--name", "x", ok=False)
    assert result.exit_code == 1 and "pickled" in result.output
    assert "no adapter version" in cli("promote", "x@v7", ok=False).output
    assert "between 0 and 1" in cli("canary", "x@v1", "--share", "2", ok=False).output
    assert "no active version" in cli("rollback", "x", ok=False).output
    assert "(no adapters registered)" in cli("list").stdout


def test_cli_data_dir_option(cli, lora, tmp_path):
    other = tmp_path / "elsewhere"
    assert cli("register", lora["a"], "--name", "x", "--data-dir", other).stdout.strip() == "x@v1"
    assert [v.version_id for v in Registry(other / "adapters").list()] == ["x@v1"]
    assert not (tmp_path / "adapters" / "x@v1").exists()
