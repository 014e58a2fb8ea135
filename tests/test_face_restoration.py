"""Face restoration (studio/face_restoration): faces found by OpenCV's YuNet from a detector file,
each restored by a restorer file that the real spandrel reads (GFPGAN, RestoreFormer: random
weights in the original key layout, since no real weights can be fetched here), pasted back
through a feathered mask; after a tab's run, in Extras and through REST.

The detector file is a YuNet-layout ONNX graph built here (OpenCV's own FaceDetectorYN runs it):
its heads mark every bright 32 px cell as a face, so where it finds faces is known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studio.errors import InvalidRequest, StudioError
from studio.face_restoration.restore import feather, restore_faces, square

torch = pytest.importorskip("torch")
F = torch.nn.functional


class CellFaces(torch.nn.Module):
    """YuNet's outputs (cls/obj/bbox/kps at strides 8, 16, 32): at stride 32 each cell's score is
    its mean brightness and its box the cell itself; nothing at the finer strides."""

    def forward(self, x):
        light = x.mean(1, keepdim=True) / 255
        cls = [(F.avg_pool2d(light, s) * float(s == 32)).flatten(2).transpose(1, 2) for s in (8, 16, 32)]
        obj = [c * 0 + 1 for c in cls]
        bbox = [torch.cat([c * 0 + 0.5, c * 0 + 0.5, c * 0, c * 0], 2) for c in cls]
        kps = [torch.cat([c * 0 + 0.5] * 10, 2) for c in cls]
        return (*cls, *obj, *bbox, *kps)


def write_cell_detector(path: Path) -> Path:
    pytest.importorskip("onnx")
    names = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in (8, 16, 32)]
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(CellFaces(), torch.zeros(1, 3, 64, 64), str(path), dynamo=False, input_names=["input"],
                      output_names=names, dynamic_axes={"input": {2: "h", 3: "w"}, **{n: {1: "n"} for n in names}})
    return path


def write_restoreformer(path: Path) -> Path:
    """A small RestoreFormer (spandrel reads its size from the tensors), random weights."""
    from studio.models.arches import spandrel
    spandrel()
    from spandrel.architectures.RestoreFormer import RestoreFormer
    torch.manual_seed(0)
    model = RestoreFormer(n_embed=16, embed_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1,
                          attn_resolutions=(16,), resolution=512, z_channels=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_cell_detector(root / "detectors" / "face_detection_yunet_2023mar.onnx")
    write_restoreformer(root / "face_restorers" / "RestoreFormer.pth")
    return root


# -- the pieces ---------------------------------------------------------------------------------------

def test_yunet_finds_the_faces_its_heads_mark_where_they_are(models):
    from studio.face_restoration.detect import yunet
    picture = np.zeros((128, 160, 3), np.uint8)
    picture[32:64, 64:96] = 255                     # a bright cell: a face, score 1
    picture[96:128, 0:32] = 64                      # a dark one: score sqrt(cls 0.25 x obj 1) = 0.5
    path = models / "detectors" / "face_detection_yunet_2023mar.onnx"
    faces = yunet(path, picture, 0.4)
    assert [(f.x0, f.y0, f.x1, f.y1) for f in faces] == [(64, 32, 96, 64), (0, 96, 32, 128)]
    assert faces[0].score == pytest.approx(1.0, abs=0.01) and faces[1].score == pytest.approx(0.5, abs=0.01)
    assert faces[0].landmarks[0] == (80.0, 48.0)
    assert [f.x0 for f in yunet(path, picture, 0.9)] == [64]
    assert yunet(path, np.zeros((64, 64, 3), np.uint8), 0.1) == []


def test_a_file_that_is_no_detector_is_refused_by_name(tmp_path):
    from studio.face_restoration.detect import yunet
    bad = tmp_path / "faces.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(StudioError, match="faces.onnx is not a face detector"):
        yunet(bad, np.zeros((64, 64, 3), np.uint8), 0.5)


def test_a_yolo_file_is_listed_with_allow_pickle_and_runs_through_ultralytics(tmp_path, monkeypatch):
    """ultralytics cannot import beside this torch (it needs torchvision), so a stand-in with its
    API — YOLO(path)(picture, conf=, verbose=) -> [result with boxes.xyxy and boxes.conf] — checks
    the studio's side: ADetailer's .pt files listed only with --allow-pickle (they are pickles),
    boxes clipped to the picture and best first, the confidence passed on; without ultralytics,
    a message that says what to install; a .pt asked for without --allow-pickle, a message why."""
    import sys
    import types

    from studio.face_restoration.detect import find
    from studio.models.library import ModelLibrary
    from studio.requests.detailer import take_detailer
    (tmp_path / "detectors").mkdir()
    path = tmp_path / "detectors" / "face_yolov8n.pt"
    path.write_bytes(b"a pickle ultralytics would read")
    assert ModelLibrary(tmp_path).names()["detectors"] == []
    assert ModelLibrary(tmp_path, allow_pickle=True).names()["detectors"] == ["face_yolov8n.pt"]
    calls = []

    class YOLO:
        def __init__(self, file):
            calls.append(file)

        def __call__(self, image, conf, verbose):
            calls.append((image.size, conf))
            boxes = types.SimpleNamespace(xyxy=torch.tensor([[-3.2, 4.5, 20.1, 30.9], [40.0, 40.0, 70.0, 50.0]]),
                                          conf=torch.tensor([0.6, 0.9]))
            return [types.SimpleNamespace(boxes=boxes)]
    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=YOLO))
    faces = find(path, np.zeros((60, 64, 3), np.uint8), 0.5)
    assert [(f.x0, f.y0, f.x1, f.y1, f.score) for f in faces] == [(40, 40, 64, 50, 0.9), (0, 4, 21, 31, 0.6)]
    assert calls == [str(path), ((64, 60), 0.5)]
    monkeypatch.setitem(sys.modules, "ultralytics", None)          # not installed
    with pytest.raises(StudioError, match="needs ultralytics"):
        find(tmp_path / "detectors" / "hand_yolov8n.pt", np.zeros((8, 8, 3), np.uint8), 0.5)
    with pytest.raises(InvalidRequest, match="--allow-pickle"):
        take_detailer({"ad_enable": True, "ad_model": "face_yolov8n.pt"}, ["shapes"], "txt2img")


def test_a_restored_face_is_pasted_whole_over_the_face_and_fades_out_at_the_crop():
    class Box:
        x0, y0, x1, y1 = 20, 20, 40, 40
    picture = np.full((80, 80, 3), 50, np.uint8)
    out = restore_faces(picture, [Box], lambda crop: np.full_like(crop, 250), visibility=1.0)
    left, top, side = square(Box, 80, 80)
    assert side == 36 and (left, top) == (12, 12)
    assert (out[20:40, 20:40] == 250).all()                          # the face: the restorer's
    assert (out[:left] == 50).all() and (out[:, left + side:] == 50).all()     # outside the crop: as it was
    edge = out[30, left:left + 6, 0]
    assert 50 <= edge[0] < edge[-1] <= 250 and (np.diff(edge.astype(int)) >= 0).all()   # a fade, not a seam
    half = restore_faces(picture, [Box], lambda crop: np.full_like(crop, 250), visibility=0.5)
    assert (half[20:40, 20:40] == 150).all()
    mask = feather(36)
    assert mask.max() == 1 and mask[0, 0] < 0.05 and (mask == mask.T).all()


def test_a_face_at_the_edge_is_restored_from_a_crop_padded_with_the_edge():
    class Box:
        x0, y0, x1, y1 = 0, 0, 16, 16
    picture = np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)
    seen = []
    out = restore_faces(picture, [Box], lambda crop: seen.append(crop.copy()) or crop, visibility=1.0)
    assert seen[0].shape == (29, 29, 3)
    assert np.abs(out.astype(int) - picture).max() <= 1              # an identity restorer changes nothing


def test_restorers_are_called_as_their_authors_call_them(models, tmp_path):
    """RestoreFormer through the studio (a face in [-1, 1], its output back to [0, 1]) gives what
    spandrel's own descriptor gives; anything that is no face restorer is refused by name."""
    from studio.face_restoration import restorers
    from studio.models.arches import read_model
    path = models / "face_restorers" / "RestoreFormer.pth"
    restorer = restorers.load(path, "cpu")
    face = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    ours = restorer.run(face, 0.5)
    with torch.inference_mode():
        theirs = read_model(path, "a face restorer")(face)
    assert restorer.name == "RestoreFormer" and ours.shape == (1, 3, 512, 512)
    assert torch.allclose(ours, theirs, atol=1e-5)
    from studio.models.arches import spandrel
    spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN
    torch.save(ESRGAN(num_filters=8, num_blocks=1, scale=2).state_dict(), tmp_path / "2x.pth")
    with pytest.raises(StudioError, match="2x.pth is not a face restorer .*ESRGAN"):
        restorers.load(tmp_path / "2x.pth", "cpu")


def test_a_gfpgan_file_in_its_release_layout_is_read_and_runs_reproducibly(tmp_path):
    """GFPGAN v1.4's layout (spandrel builds the 512 px model whatever the file: 86 M random
    weights here, wrapped in `params_ema` as the release is); its StyleGAN noise is the file's
    own, so the same face gives the same picture."""
    from studio.face_restoration import restorers
    from studio.models.arches import spandrel
    spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN
    torch.manual_seed(0)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False,
                   num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    with torch.no_grad():               # the noise strengths a trained model has (0 at initialisation)
        for name, parameter in model.named_parameters():
            if name.startswith("stylegan_decoder.style_convs.") and name.endswith(".weight") and parameter.numel() == 1:
                parameter.fill_(0.5)
    torch.save({"params_ema": model.state_dict()}, tmp_path / "GFPGANv1.4.pth")
    del model
    restorer = restorers.load(tmp_path / "GFPGANv1.4.pth", "cpu")
    face = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    one, two = restorer.run(face, 0.5), restorer.run(face, 0.5)
    assert restorer.name == "GFPGAN" and one.shape == (1, 3, 512, 512) and torch.isfinite(one).all()
    assert torch.equal(one, two)
    restorers._cache.clear()


# -- in the studio ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def studio(models, tmp_path_factory):
    from studio.config import Settings
    from studio.serving.studio import Studio
    return Studio.from_settings(Settings(model="", outputs=tmp_path_factory.mktemp("faces"), models_dir=models))


FACES = dict(restore_faces=True, face_confidence=0.2)


def test_txt2img_with_restore_faces_saves_the_restored_picture_with_a1111s_key(studio):
    from studio.outputs.metadata import parse_parameters, read_metadata
    from studio.serving.sequence import Sequence
    from studio.upscale import txt2img_tool
    raw = dict(prompt="a large white square in the center on a black background", steps=4, seed=5,
               width=64, height=64, **FACES)
    tool = txt2img_tool(studio, raw)
    result = tool(studio, raw, Sequence(studio, user="f", session="f"))
    (final,), (plain,) = result.images, result.first_pass
    assert final.path.is_file() and plain.path.is_file() and final.path != plain.path
    assert final.path.name.endswith("-5.png") and final.seed == 5
    text, data = read_metadata(final.path)
    fields = parse_parameters(text)[2]
    assert fields["Face restoration"] == "RestoreFormer.pth" and fields["Seed"] == "5"
    assert fields["Face detector"] == "face_detection_yunet_2023mar.onnx"
    assert data["faces"] and data["face_restoration"]["Face restoration"] == "RestoreFormer.pth"
    x0, y0, x1, y1, _ = data["faces"][0]
    a, b = np.asarray(final.image, int), np.asarray(plain.image, int)
    assert np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean() > 1     # a random restorer: the face is changed
    again = tool(studio, raw, Sequence(studio, user="f", session="f")).images[0]
    assert np.array_equal(np.asarray(again.image), np.asarray(final.image))      # same seed, same picture
    from PIL import Image

    from studio.outputs.pnginfo import read_info
    sent = read_info(Image.open(final.path)).fields                 # PNG Info -> the tab: the panel is back
    assert sent["restore_faces"] is True and sent["face_restorer"] == "RestoreFormer.pth"
    assert sent["face_confidence"] == 0.2 and sent["seed"] == 5


def test_no_face_found_keeps_the_picture_and_says_so(studio):
    from studio.serving.sequence import Sequence
    from studio.upscale.faces import run_faces
    raw = dict(prompt="a small red circle on a black background", steps=4, seed=1, width=64, height=64,
               restore_faces=True, face_confidence=1.0)
    result = run_faces(studio, raw, Sequence(studio, user="f", session="f"))
    assert np.array_equal(np.asarray(result.images[0].image), np.asarray(result.first_pass[0].image))
    assert any("found no face" in note for note in result.notes)


def test_missing_files_are_named_before_anything_runs(tmp_path):
    from studio.requests.face_restoration import take_faces
    with pytest.raises(InvalidRequest, match="GFPGANv1.4.pth.*models/face_restorers"):
        take_faces({"restore_faces": True}, [], ["yunet.onnx"])
    with pytest.raises(InvalidRequest, match="face_detection_yunet_2023mar.onnx.*models/detectors"):
        take_faces({"restore_faces": True}, ["GFPGANv1.4.pth"], [])
    with pytest.raises(InvalidRequest, match="Unknown face restorer 'x.pth'"):
        take_faces({"restore_faces": True, "face_restorer": "x.pth"}, ["GFPGANv1.4.pth"], ["y.onnx"])
    with pytest.raises(InvalidRequest, match="Visibility|visibility"):
        take_faces({"restore_faces": True, "face_visibility": 2}, ["GFPGANv1.4.pth"], ["y.onnx"])
    assert take_faces({"restore_faces": False, "face_restorer": "x.pth"}, [], []) is None


def test_restore_faces_over_rest_as_a1111_clients_send_it(studio, tmp_path):
    """txt2img's `restore_faces` with A1111's `face_restoration_model` option; Extras' GFPGAN
    visibility (a RestoreFormer file serves GFPGAN's slot); /face-restorers lists what runs."""
    import base64
    import io
    import json

    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from PIL import Image

    from studio.api.routes import api_routes
    rest = TestClient(FastAPI(routes=api_routes(studio, [])))
    assert rest.get("/sdapi/v1/face-restorers").json() == [
        {"name": "RestoreFormer.pth", "cmd_dir": str(studio.file_of("face_restorers", "RestoreFormer.pth").parent)}]
    body = {"prompt": "a large white square in the center on a black background", "steps": 4, "seed": 5,
            "width": 64, "height": 64, "restore_faces": True}
    answer = rest.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert info["restore_faces"] is True and info["face_restoration_model"] == "RestoreFormer.pth"
    assert "Face restoration: RestoreFormer.pth" in info["infotexts"][0]
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 200, 200)).save(picture, "PNG")
    extras = {"image": base64.b64encode(picture.getvalue()).decode(), "upscaling_resize": 1,
              "gfpgan_visibility": 0.5}
    done = rest.post("/sdapi/v1/extra-single-image", json=extras)
    assert done.status_code == 200, done.text
    assert "Face restoration: RestoreFormer.pth" in done.json()["html_info"]
    wrong = rest.post("/sdapi/v1/extra-single-image", json={**extras, "gfpgan_visibility": 0, "codeformer_visibility": 1})
    assert wrong.status_code == 400 and "codeformer file in models/face_restorers" in wrong.json()["detail"]


def test_restore_faces_without_files_answers_as_a1111_with_a_note_naming_them(tmp_path):
    import json

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from studio.api.routes import api_routes
    from studio.config import Settings
    from studio.serving.studio import Studio
    bare = Studio.from_settings(Settings(model="", outputs=tmp_path / "out", models_dir=tmp_path / "models"))
    rest = TestClient(FastAPI(routes=api_routes(bare, [])))
    answer = rest.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "steps": 2, "width": 64, "height": 64,
                                                   "restore_faces": True})
    assert answer.status_code == 200
    info = json.loads(answer.json()["info"])
    assert info["restore_faces"] is False and any("GFPGANv1.4.pth" in n for n in info["notes"])
    assert rest.get("/sdapi/v1/face-restorers").json() == []
