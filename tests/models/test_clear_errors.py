"""Errors that name what is wrong: a missing LLM or tokenizer folder, unreadable audio given to ``encode_cuts``,
and a ``.nemo`` archive with unsafe members (refused before anything is unpacked)."""

from __future__ import annotations

import tarfile
import tempfile
import uuid
from pathlib import Path

import pytest

from nemo_salad.checkpoint.nemo_io import UnsafeArchiveError
from nemo_salad.models.salad import SaladModel
from nemo_salad.parts.audio_checks import BadSampleError
from tests.helpers.tiny import model_cfg
from tests.helpers.tone_speech import tone_cuts


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer_dir):
    return SaladModel(model_cfg(tiny_tokenizer_dir, adapter="mlp")).eval()


def test_a_missing_llm_folder_is_named(tmp_path):
    missing = tmp_path / "no_such_llm"
    with pytest.raises(FileNotFoundError, match=rf"model\.llm\.pretrained='{missing}': no such directory \(expected "
                                                r"'smollm2' or a local Hugging Face model directory"):
        SaladModel(model_cfg(None, **{"llm.pretrained": str(missing)}))


def test_a_missing_or_empty_tokenizer_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"model\.tokenizer\.dir='{tmp_path / 'tok'}': no such directory"):
        SaladModel(model_cfg(tmp_path / "tok"))
    with pytest.raises(FileNotFoundError, match=rf"model\.tokenizer\.dir='{tmp_path}': no tokenizer in this "
                                                r"directory \(expected tokenizer\.json"):
        SaladModel(model_cfg(tmp_path))


def test_encode_cuts_names_the_sample_whose_audio_cannot_be_read(tiny_model, tmp_path):
    cuts = list(tone_cuts(["the cat sat on the mat", "a dog ran in the park"], tmp_path))
    assert [e.shape[0] > 0 for e in tiny_model.encode_cuts(cuts)] == [True, True]
    (tmp_path / "utt1.flac").unlink()
    with pytest.raises(BadSampleError, match=rf"sample 'utt1': cannot read audio {tmp_path / 'utt1.flac'}: the file "
                                             r"does not exist"):
        tiny_model.encode_cuts(cuts)
    (tmp_path / "utt1.flac").write_bytes(b"not audio at all")
    with pytest.raises(BadSampleError, match=rf"sample 'utt1': cannot read audio {tmp_path / 'utt1.flac'}: "
                                             r"AudioLoadingError: .*expected a readable audio file"):
        tiny_model.encode_cuts(cuts)


@pytest.fixture(scope="module")
def saved_nemo(tiny_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nemo") / "good.nemo"
    tiny_model.save_to(str(path))
    return path


def _with_member(good: Path, out: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    import io

    with tarfile.open(good) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        member.size = len(data) if member.isfile() else 0
        dst.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out


@pytest.mark.parametrize("name, kind, link, reason", [
    ("../{escape}", tarfile.REGTYPE, "", r"'\.\./{escape}' points outside the archive folder \('\.\.'\)"),
    ("/{escape}", tarfile.REGTYPE, "", r"'/{escape}' has an absolute path"),
    ("./{escape}", tarfile.SYMTYPE, "/etc/passwd", r"'\./{escape}' is a symbolic link to '/etc/passwd'"),
    ("./{escape}", tarfile.LNKTYPE, "./model_config.yaml", r"'\./{escape}' is a hard link to"),
], ids=["parent", "absolute", "symlink", "hardlink"])
def test_a_nemo_with_unsafe_members_is_refused_before_unpacking(saved_nemo, tmp_path, name, kind, link, reason):
    escape = f"salad_escape_{uuid.uuid4().hex}"
    member = tarfile.TarInfo(name.format(escape=escape))
    member.type, member.linkname = kind, link
    bad = _with_member(saved_nemo, tmp_path / "bad.nemo", member, b"payload")
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.nemo: refusing to unpack 1 unsafe member\(s\): "
                                                 rf"{reason.format(escape=escape)}"):
        SaladModel.restore_from(str(bad), map_location="cpu")
    assert not (Path(tempfile.gettempdir()) / escape).exists() and not (Path("/") / escape).exists()
    assert isinstance(SaladModel.restore_from(str(saved_nemo), map_location="cpu"), SaladModel)  # a good one loads
