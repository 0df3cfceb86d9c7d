"""Downloading, installing and naming models, against stand-in hosts on 127.0.0.1 (see model_host.py).

The served checkpoint is the tiny mmseg fixture; a $PAL_CATALOGUE override (the documented mirror/test
switch) points the catalogue entry at the stand-in host and at the tiny network's shape.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import gdown
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from model_host import DriveTunnel, ModelHost, Served
from pal_core.cli import main
from pal_core.hub import catalogue, download, installing, loading, model_store
from pal_core.hub.checkpoint import read_detector_file
from pal_core.hub.download import DownloadError, download_model
from pal_core.hub.installing import InstallError, install_file
from pal_core.hub.loading import ModelNotFoundError, load_detector

FIXTURES = Path(__file__).parent / "fixtures" / "mmseg"
CHECKPOINT = (FIXTURES / "swin_w12.pth").read_bytes()
TINY_W12 = {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 12,
            "head_channels": 32}
NAME = "pal4vst-unified"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(model_store.HOME_ENV, str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture
def host():
    server = ModelHost()
    yield server
    server.close()


def use_catalogue(tmp_path, monkeypatch, **fields) -> None:
    """Overrides the pal4vst-unified entry through $PAL_CATALOGUE, as a mirror would."""
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({NAME: {"architecture": TINY_W12, **fields}}))
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(path))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_direct_download_is_verified_converted_and_recorded(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    path = download_model(NAME, show_progress=False)
    assert path == home / "pal4vst-unified.safetensors"
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]
    assert path.stat().st_mode & 0o777 == 0o644
    record = (home / "pal4vst-unified.safetensors.sha256").read_text().split()
    assert record == [model_store.sha256_of(path), "pal4vst-unified.safetensors"]
    assert model_store.verify(path).ok
    assert read_detector_file(path).extra["download"] == {
        "url": host.url("/u.pth"), "bytes": len(CHECKPOINT), "sha256": hashlib.sha256(CHECKPOINT).hexdigest()}
    ours = load_detector(NAME, device="cpu")
    reference = load_detector(FIXTURES / "swin_w12.pth", device="cpu")
    assert ours.name == NAME and ours.info.format == "safetensors"
    images = torch.rand(1, 40, 56, 3)
    assert torch.allclose(ours.predict(images), reference.predict(images), atol=1e-6)
    with open(path, "ab") as f:  # damage it: --verify notices
        f.write(b"\0")
    assert not model_store.verify(path).ok


def test_interrupted_download_resumes_where_it_stopped(tmp_path, monkeypatch, home, host, capsys):
    cut = len(CHECKPOINT) // 3
    host.files["/u.pth"] = Served(CHECKPOINT, cut_at=cut)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    monkeypatch.setattr(download, "RETRIES", 0)
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_model(NAME, show_progress=False)
    assert not (home / "pal4vst-unified.safetensors").exists()
    parts = [p for p in home.iterdir() if p.name.endswith(".part")]
    kept = parts[0].stat().st_size  # whole chunks received before the cut
    assert len(parts) == 1 and 0 < kept <= cut and download.received_bytes(NAME) == kept
    code, out, _ = run_cli(capsys, "models", "--json")
    assert json.loads(out.splitlines()[0])["received_bytes"] == kept
    download_model(NAME, show_progress=False)
    assert host.requests[-1]["range"] == f"bytes={kept}-"
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]
    assert model_store.verify(home / "pal4vst-unified.safetensors").ok


def test_dropped_connection_is_resumed_within_one_run(tmp_path, monkeypatch, home, host):
    cut = len(CHECKPOINT) // 2
    host.files["/u.pth"] = Served(CHECKPOINT, cut_at=cut)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    seen = []
    download_model(NAME, show_progress=False, progress=lambda done, total: seen.append((done, total)))
    first, second = [r["range"] for r in host.requests]
    assert first is None and 0 < int(second.removeprefix("bytes=").rstrip("-")) <= cut
    assert seen[-1] == (len(CHECKPOINT), len(CHECKPOINT))
    assert model_store.verify(home / "pal4vst-unified.safetensors").ok


def test_ctrl_c_keeps_the_part_and_a_rerun_resumes(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_model(NAME, show_progress=False, progress=interrupt)
    parts = [p for p in home.iterdir() if p.name.endswith(".part")]
    kept = parts[0].stat().st_size
    assert len(parts) == 1 and 0 < kept < len(CHECKPOINT) and not (home / "pal4vst-unified.safetensors").exists()
    download_model(NAME, show_progress=False)
    assert host.requests[-1]["range"] == f"bytes={kept}-"
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]


def test_a_second_download_of_the_same_model_is_refused_while_one_runs(tmp_path, monkeypatch, home, host):
    fcntl = pytest.importorskip("fcntl")  # POSIX: Windows has no advisory locks
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    home.mkdir(parents=True)
    with open(home / ".pal4vst-unified.download.lock", "ab") as other_run:
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DownloadError, match="another download into .* is fetching this model"):
            download_model(NAME, show_progress=False)
    assert host.requests == []


def test_web_page_instead_of_the_file_is_refused_and_removed(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>",
                                  "text/html")
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    with pytest.raises(DownloadError, match="quota .* not the model file.*pal models add FILE --name pal4vst-unified"):
        download_model(NAME, show_progress=False)
    assert leftovers(home) == []


def test_corrupt_download_is_refused_and_the_next_run_starts_clean(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT[:len(CHECKPOINT) // 2])  # complete as served, but cut short
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    with pytest.raises(DownloadError, match="refused and deleted"):
        download_model(NAME, show_progress=False)
    assert leftovers(home) == []
    host.files["/u.pth"] = Served(CHECKPOINT)
    download_model(NAME, show_progress=False)
    assert host.requests[-1]["range"] is None  # started afresh
    assert model_store.verify(home / "pal4vst-unified.safetensors").ok


def test_a_model_of_another_architecture_is_refused(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served((FIXTURES / "swin_w7.pth").read_bytes())
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    with pytest.raises(DownloadError, match="another shape than pal4vst-unified: embed_dim 8 \\(expected 16\\)"):
        download_model(NAME, show_progress=False)
    assert leftovers(home) == []


def test_the_real_catalogue_expects_the_pal4vst_network(home):
    with pytest.raises(InstallError, match="embed_dim 16 \\(expected 128\\).*head_channels 32 \\(expected 512\\)"):
        install_file(FIXTURES / "swin_w12.pth", NAME)
    with pytest.raises(InstallError, match="embed_dim 8 \\(expected 128\\).*window_size 7 \\(expected 12\\)"):
        install_file(FIXTURES / "swin_w7.pth", "pal4vst-shadow")
    assert leftovers(home) == []


def test_no_connection_says_so_in_one_line(tmp_path, monkeypatch, home):
    closed = ModelHost()
    url = closed.url("/u.pth")
    closed.close()  # nothing listens there any more
    use_catalogue(tmp_path, monkeypatch, url=url)
    monkeypatch.setattr(download, "RETRIES", 1)  # gdown wraps the last failure in its own error
    with pytest.raises(DownloadError) as raised:
        download_model(NAME, show_progress=False)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("could not reach 127.0.0.1 (no connection")
    assert "pal models add FILE --name pal4vst-unified" in message


def test_a_full_disk_leaves_nothing_under_the_final_name(home, monkeypatch):
    def full(checkpoint, path, overwrite=False):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(installing, "save_detector_file", full)
    with pytest.raises(InstallError, match="disk holding .* is full"):
        install_file(FIXTURES / "swin_w12.pth", "my-model")
    assert leftovers(home) == []


@pytest.fixture
def drive(tmp_path, monkeypatch, host):
    """Google Drive played by the stand-in host through an HTTPS proxy the test CA vouches for."""
    tunnel = DriveTunnel(host, tmp_path / "test-ca.pem")
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", tunnel.proxy)
    monkeypatch.setenv("https_proxy", tunnel.proxy)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tunnel.ca_file)
    yield tunnel
    tunnel.close()


def test_drive_confirmation_page_is_passed(tmp_path, monkeypatch, home, host, drive):
    host.drive["TESTFILE"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, drive_id="TESTFILE")
    path = download_model(NAME, show_progress=False)
    assert model_store.verify(path).ok
    assert drive.connects == ["drive.google.com", "drive.usercontent.google.com"]
    assert [(r["path"], r["query"].get("confirm")) for r in host.requests] == [("/uc", None), ("/download", "t")]
    assert load_detector(NAME, device="cpu").info.source == str(path)


def test_drive_quota_page_gives_the_link_to_click(tmp_path, monkeypatch, home, host, drive):
    host.drive["BUSYFILE"] = "quota"
    use_catalogue(tmp_path, monkeypatch, drive_id="BUSYFILE")
    with pytest.raises(DownloadError) as raised:
        download_model(NAME, show_progress=False)
    message = str(raised.value)
    assert "\n" not in message and "Too many users have viewed or downloaded this file" in message
    assert "open https://drive.google.com/file/d/BUSYFILE/view in a browser" in message
    assert leftovers(home) == []


def test_names_resolve_and_download_only_when_asked(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    with pytest.raises(ModelNotFoundError) as raised:
        load_detector(NAME, device="cpu")
    message = str(raised.value)
    assert "\n" not in message and "run `pal download pal4vst-unified`" in message and host.url("/u.pth") in message
    assert host.requests == []  # never a silent download
    assert load_detector(NAME, device="cpu", download=True).name == NAME
    assert len(host.requests) == 1
    assert load_detector("pal-lite", device="cpu").info.source.endswith("pal_lite.safetensors")
    with pytest.raises(ModelNotFoundError, match="no model named 'pal4vst-other'.*pal4vst-unified"):
        load_detector("pal4vst-other", device="cpu")


def test_fallback_message_appears_exactly_when_the_official_model_is_missing(tmp_path, monkeypatch, home, capsys):
    monkeypatch.setattr(loading, "_said", set())
    assert load_detector(device="cpu").name == "pal_lite"
    load_detector(device="cpu")
    err = capsys.readouterr().err
    assert err.count("pal download pal4vst-unified") == 1 and "pal-lite" in err
    assert loading.default_model_notice() is not None
    use_catalogue(tmp_path, monkeypatch)
    install_file(FIXTURES / "swin_w12.pth", NAME)
    monkeypatch.setattr(loading, "_said", set())
    assert load_detector(device="cpu").name == NAME
    assert loading.default_model_notice() is None
    assert capsys.readouterr().err == ""


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_download_then_fix_uses_the_official_model_with_no_path(tmp_path, monkeypatch, home, host, capsys):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    code, out, err = run_cli(capsys, "download", NAME, "--no-progress")
    assert code == 0 and "installed pal4vst-unified" in out and "it is now the default model" in out
    code, out, _ = run_cli(capsys, "download", NAME, "--no-progress")
    assert code == 0 and "already installed" in out and len(host.requests) == 1
    code, _, err = run_cli(capsys, "fix", image, "--out", tmp_path / "out")
    assert code == 0 and "pal-lite" not in err
    report = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert report["model"] == NAME and report["detector"] == str(home / "pal4vst-unified.safetensors")
    code, out, _ = run_cli(capsys, "detect", image)
    assert code == 0 and json.loads(out)["model"] == NAME


def test_models_list_verify_and_add(tmp_path, monkeypatch, home, capsys):
    use_catalogue(tmp_path, monkeypatch)
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert code == 0 and set(rows) == set(catalogue.names())
    assert rows[NAME]["status"] == "not installed" and rows["pal-lite"]["status"] == "shipped"
    assert rows["pal4vst-shadow"]["link"] == "https://drive.google.com/file/d/1AOuSwSFwN5X1u6SYni8KehhjFquBpJ6Q/view"

    fetched = tmp_path / "downloads" / "checkpoint.pth"
    fetched.parent.mkdir()
    fetched.write_bytes(CHECKPOINT)
    code, _, err = run_cli(capsys, "models", "add", fetched)
    assert code == 2 and "--name" in err
    code, out, _ = run_cli(capsys, "models", "add", fetched, "--name", NAME)
    assert code == 0 and str(home / "pal4vst-unified.safetensors") in out
    assert read_detector_file(home / "pal4vst-unified.safetensors").extra["added"] == {
        "file": "checkpoint.pth", "bytes": len(CHECKPOINT), "sha256": model_store.sha256_of(fetched)}
    code, _, err = run_cli(capsys, "models", "add", fetched, "--name", NAME)
    assert code == 2 and "--overwrite" in err
    code, out, _ = run_cli(capsys, "models", "add", FIXTURES / "swin_w7.pth", "--name", "my-w7")
    assert code == 0  # a name of one's own: any architecture

    code, out, _ = run_cli(capsys, "models", "--verify")
    assert code == 0 and out.count("verify: ok") == 2 and "pal4vst-unified    installed" in out
    with open(home / "my-w7.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"X")
    code, out, err = run_cli(capsys, "models", "--verify")
    assert code == 1 and "verify: FAILED" in out and "1 installed model(s) failed verification" in err
    code, _, err = run_cli(capsys, "models", "add", FIXTURES / "swin_w7.pth", "--name", "pal4vst-stylegan2")
    assert code == 2 and "another shape than pal4vst-stylegan2" in err


@pytest.mark.parametrize("failure, expected", [
    (lambda: requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded (Caused by "
        "NameResolutionError(\"Failed to resolve 'drive.google.com' ([Errno -3] Temporary failure in name resolution)\"))"),
     r"could not reach drive\.google\.com \(DNS lookup failed: is this machine online\?\)"),
    (lambda: OSError(errno.ENOSPC, "No space left on device"),
     "the disk holding .* is full: the file of pal4vst-unified is 0.5-1.5 GB"),
])
def test_dns_failure_and_full_disk_during_the_transfer_say_so(home, monkeypatch, failure, expected):
    def fail(**kwargs):
        raise failure()

    monkeypatch.setattr(gdown, "download", fail)
    with pytest.raises(DownloadError, match=expected) as raised:
        download_model(NAME, show_progress=False)
    assert "\n" not in str(raised.value)


def test_ctrl_c_in_pal_download_says_how_to_resume(home, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("pal_core.cli.download.download_model", interrupted)
    code, _, err = run_cli(capsys, "download", NAME, "--no-progress")
    assert code == 130 and "interrupted; the part received is kept" in err and "run the same command again" in err


def test_a_bad_catalogue_override_is_named(tmp_path, monkeypatch, home, capsys):
    (tmp_path / "catalogue.json").write_text(json.dumps({NAME: {"urll": "http://127.0.0.1:1/x.pth"}}))
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(tmp_path / "catalogue.json"))
    code, _, err = run_cli(capsys, "download", NAME)
    assert code == 2 and "cannot override ['urll']" in err
    code, _, err = run_cli(capsys, "models")
    assert code == 2 and "cannot override ['urll']" in err


def stop_midway(monkeypatch, host, path="/u.pth") -> int:
    """Runs a download that the connection cuts after a third; returns the bytes kept for a resume."""
    host.files[path].cut_at = len(host.files[path].body) // 3
    monkeypatch.setattr(download, "RETRIES", 0)
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download_model(NAME, show_progress=False)
    monkeypatch.setattr(download, "RETRIES", 3)
    return download.received_bytes(NAME)


def test_a_part_the_server_cannot_continue_is_restarted_and_said(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT, ranges=False)  # no byte ranges: every answer is the whole file
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    kept = stop_midway(monkeypatch, host)
    assert kept > 0
    said = []
    path = download_model(NAME, show_progress=False, say=said.append)
    assert model_store.verify(path).ok
    assert any("cannot continue the part received earlier" in line and "starts again from the beginning" in line
               for line in said), said
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]


def test_a_part_of_a_file_that_changed_on_the_server_is_restarted(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    assert stop_midway(monkeypatch, host) > 0
    # The server's file is now the same network saved with its training state: another length.
    from mm_checkpoints import save_mmcv1_checkpoint
    weights = torch.load(FIXTURES / "swin_w12.pth", weights_only=True)["state_dict"]
    changed = save_mmcv1_checkpoint(weights, tmp_path / "best_mIoU_iter_7200.pth").read_bytes()
    host.files["/u.pth"] = Served(changed)
    said = []
    path = download_model(NAME, show_progress=False, say=said.append)
    assert any("no longer the one a part was received of" in line for line in said), said
    assert host.requests[-1]["range"] is None  # started from the beginning, not spliced onto the old part
    assert read_detector_file(path).extra["download"]["sha256"] == hashlib.sha256(changed).hexdigest()


def test_overwrite_discards_a_part_received_earlier(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    assert stop_midway(monkeypatch, host) > 0
    download_model(NAME, show_progress=False, overwrite=True)
    assert [r["range"] for r in host.requests[1:]] == [None]
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]


def test_a_stalled_transfer_gives_up_and_says_so(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT, stall_after=len(CHECKPOINT) // 4)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    monkeypatch.setattr(download, "RETRIES", 0)
    monkeypatch.setattr(download, "TIMEOUT", (5, 1))
    with pytest.raises(DownloadError) as raised:
        download_model(NAME, show_progress=False)
    message = str(raised.value)
    assert "\n" not in message and message.startswith("127.0.0.1 stopped sending pal4vst-unified (nothing for 1 s")
    assert "run the same command again to resume" in message and download.received_bytes(NAME) > 0


def test_a_file_larger_than_any_checkpoint_is_refused(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", len(CHECKPOINT) - 1)
    with pytest.raises(DownloadError, match=r"more than any PAL4VST checkpoint .*: refused"):
        download_model(NAME, show_progress=False)
    assert leftovers(home) == []


def test_the_disk_check_uses_the_length_the_server_announces(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    real = download.shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=len(CHECKPOINT) + 1000))
    with pytest.raises(DownloadError) as raised:
        download_model(NAME, show_progress=False)
    message = str(raised.value)
    still = f"{len(CHECKPOINT) / 1e9:.2f} GB still to download"
    assert message.startswith("not enough space in") and still in message and "0.48 GB converted" in message


def test_a_full_disk_while_converting_is_a_message_with_the_space_needed(home, monkeypatch):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr("pal_core.hub.checkpoint.save_file", full)
    with pytest.raises(InstallError) as raised:
        install_file(FIXTURES / "swin_w12.pth", "my-model")
    message = str(raised.value)
    assert "is full: the converted model needs 0.00 GB and" in message and "GB are free" in message
    assert leftovers(home) == []


def test_the_pth_unusable_falls_back_to_the_torchscript_export(tmp_path, monkeypatch, home, host, capsys):
    from test_torchscript_safety import hostile_export

    victim = tmp_path / "backup.sh"
    victim.write_text("#!/bin/sh\necho my backup\n")
    export = hostile_export(tmp_path, victim)  # a program that rewrites `victim` if it is ever run
    host.files["/u.pth"] = Served(b"PK\x03\x04 not a checkpoint")
    host.files["/end2end.pt"] = Served(export.read_bytes())
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"), torchscript_url=host.url("/end2end.pt"))
    code, out, err = run_cli(capsys, "download", NAME, "--no-progress")
    assert code == 0, err
    assert "refused and deleted" in err and "trying the authors' TorchScript export of the same model" in err
    assert victim.read_text() == "#!/bin/sh\necho my backup\n"
    installed = read_detector_file(home / "pal4vst-unified.safetensors")
    assert installed.extra["download"]["url"] == host.url("/end2end.pt")
    reference = load_detector(FIXTURES / "swin_w12.pth", device="cpu", dtype="fp32")
    images = torch.rand(1, 40, 56, 3)
    assert torch.allclose(load_detector(device="cpu", dtype="fp32").predict(images), reference.predict(images),
                          atol=1e-6)
    assert leftovers(home) == ["pal4vst-unified.safetensors", "pal4vst-unified.safetensors.sha256"]


def test_when_neither_file_can_be_used_both_reasons_are_given(tmp_path, monkeypatch, home, host):
    host.files["/u.pth"] = Served(b"PK\x03\x04 not a checkpoint")
    host.files["/end2end.pt"] = Served(b"<!DOCTYPE html><html>Quota exceeded</html>", "text/html")
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"), torchscript_url=host.url("/end2end.pt"))
    with pytest.raises(DownloadError, match="neither file of pal4vst-unified could be used. The .pth: .*refused.*"
                                           "Its TorchScript export: .*quota"):
        download_model(NAME, show_progress=False)
    assert leftovers(home) == []


def test_a_model_added_under_a_name_of_ones_own_loads_by_that_name(tmp_path, home, capsys):
    code, out, _ = run_cli(capsys, "models", "add", FIXTURES / "swin_w7.pth", "--name", "mine")
    assert code == 0 and "use it with --model mine" in out
    assert load_detector("mine", device="cpu").info.source == str(home / "mine.safetensors")
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    code, out, err = run_cli(capsys, "detect", image, "--model", "mine")
    assert code == 0, err
    with pytest.raises(ModelNotFoundError, match=r"no model named 'mien'.*installed: mine\)"):
        load_detector("mien", device="cpu")


def test_downloads_say_what_happens_after_the_transfer(tmp_path, monkeypatch, home, host, capsys):
    host.files["/u.pth"] = Served(CHECKPOINT)
    use_catalogue(tmp_path, monkeypatch, url=host.url("/u.pth"))
    code, _, err = run_cli(capsys, "download", NAME, "--no-progress")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("pal download: ")]
    size = f"{len(CHECKPOINT) / 1e6:.0f} MB"
    assert lines[0] == f"pal download: reading .pal4vst-unified.download ({size}) and converting it to " \
                       "pal4vst-unified.safetensors"
    assert lines[1].startswith("pal download: writing pal4vst-unified.safetensors (")


def test_catalogue_sizes_are_a_range_until_the_server_says(home, capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert rows[NAME]["bytes"] is None and rows[NAME]["download_bytes"] == list(catalogue.PAL4VST_DOWNLOAD_BYTES)
    code, out, _ = run_cli(capsys, "models")
    assert "0.5-1.5 GB" in out.splitlines()[0] and "~" not in out


def test_a_mirror_file_of_an_earlier_release_still_works(tmp_path, monkeypatch, home):
    """approx_bytes (a guessed size, gone since the server's length is used) is accepted and ignored."""
    url = "http://127.0.0.1:1/mirror.pth"
    (tmp_path / "catalogue.json").write_text(json.dumps({NAME: {"url": url, "approx_bytes": 485_000_000}}))
    monkeypatch.setenv(catalogue.CATALOGUE_ENV, str(tmp_path / "catalogue.json"))
    entry = catalogue.get(NAME)
    assert entry.url == url and not hasattr(entry, "approx_bytes")
