"""sample.py end to end on a fixture-converted MEGA and tokenizer, with a generated image.

The fixture's random weights predict a negative camera scale (mesh behind the camera); the test
shifts the camera head's scale bias so that the (random, metres-wide) meshes land inside the
crop, then checks the files: .obj with 6890 vertices / 13776 faces, PNGs of the image's size
whose changed pixels are exactly where the mesh projects, results.json with the hypotheses'
spread, and that bad inputs are reported while the other images are processed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import convert_torch_weights
import sample
from hmr_jax.conversion import common
from hmr_jax.mesh.io import read_mesh
from hmr_jax.render import PerspectiveCamera, rasterize


@pytest.fixture(scope="module")
def setup(parity_dir, reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    conns = reference_dir / "ConnectionMatrices"
    tok = root / "tokenizer"
    assert convert_torch_weights.main([str(parity_dir / "mesh_vqvae.pt"), "--config", str(parity_dir / "mesh_vqvae.json"),
                                       "--out", str(tok), "--set", f"autoencoder.connection_folder={conns}"]) == 0
    raw = root / "raw_mega"
    assert convert_torch_weights.main([str(parity_dir / "mega_cvqmae_small.pt"), "--config",
                                       str(parity_dir / "mega_cvqmae_small.json"), "--out", str(raw)]) == 0
    variables, config = common.read_converted(raw)
    variables = {k: dict(v) for k, v in variables.items()}
    bias = np.array(variables["params"]["decoder"]["cam_predictor"]["bias"])
    bias[0] += 0.3  # camera scale ~0.15: the mesh fits in the crop
    variables["params"]["decoder"]["cam_predictor"]["bias"] = bias
    ckpt = common.write_converted(root / "mega", variables, config, {"source": "test"})
    images = root / "images"
    images.mkdir()
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (240, 320, 3), np.uint8)).save(images / "scene.png")
    (images / "broken.jpg").write_bytes(b"not an image")
    boxes = root / "boxes.json"
    boxes.write_text(json.dumps({"scene.png": [[100, 40, 220, 230], [400, 300, 500, 400]]}))
    return {"root": root, "tok": tok, "ckpt": ckpt, "images": images, "boxes": boxes,
            "faces": reference_dir / "template.ply", "conns": conns}


@pytest.mark.slow
def test_sample_end_to_end(setup, capsys):
    s = setup
    out = s["root"] / "out"
    rc = sample.main(["--checkpoint", str(s["ckpt"]), "--images", str(s["images"]), "--bboxes", str(s["boxes"]),
                      "--num-samples", "2", "--out", str(out), "--tokenizer", str(s["tok"]),
                      "--faces", str(s["faces"]), "--connections", str(s["conns"])])
    err = capsys.readouterr().err
    assert rc == 1  # the broken image and the box outside the image were skipped...
    assert "broken.jpg" in err and "outside" in err
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "stochastic" and len(results["errors"]) == 2
    (scene,) = [r for r in results["images"] if r["image"].endswith("scene.png")]
    (person,) = scene["persons"]  # ...and the valid person processed
    assert person["person"] == 0 and len(person["hypotheses"]) == 2
    assert person["spread"]["max_vertex_distance_to_mean_m"] > 0
    original = np.asarray(Image.open(s["images"] / "scene.png").convert("RGB"))
    _, faces = read_mesh(s["faces"])
    for hyp in person["hypotheses"]:
        vertices, mesh_faces = read_mesh(out / hyp["mesh"])
        assert vertices.shape == (6890, 3) and mesh_faces.shape == (13776, 3)
        overlay = np.asarray(Image.open(out / hyp["overlay"]))
        assert overlay.shape == original.shape
        changed = np.any(overlay != original, axis=-1)
        camera = PerspectiveCamera(tuple([person["focal_length_px"]] * 2), tuple(person["principal_point_px"]),
                                   tuple(person["camera_translation_m"]))
        covered = rasterize(vertices, faces, camera, 240, 320).mask
        assert covered.sum() > 500
        assert not (changed & ~covered).any()  # nothing drawn outside the mesh
        assert changed[covered].mean() > 0.9  # and the mesh drawn where it projects
        side = np.asarray(Image.open(out / hyp["side_view"]))
        assert side.shape == original.shape and (side != 255).any()


def test_sample_rejects_a_checkpoint_of_the_wrong_kind(setup, capsys):
    s = setup
    rc = sample.main(["--checkpoint", str(s["tok"]), "--images", str(s["images"]), "--out", str(s["root"] / "o2"),
                      "--tokenizer", str(s["tok"]), "--faces", str(s["faces"])])
    assert rc == 2
    assert "mesh_vqvae" in capsys.readouterr().err


def test_crop_and_camera_helpers():
    image = np.full((100, 200, 3), 255, np.uint8)
    crop, centre, side = sample.crop_person(image, [150, 20, 250, 60], (224, 224))
    assert crop.shape == (224, 224, 3) and side == 100 and list(centre) == [200, 40]
    # the square reaches past the image's right edge: black there, white inside
    assert crop[112, 10].min() > 1.5 and crop[112, 200].max() < -1.5
    crop, _, _ = sample.crop_person(image, [0, 0, 200, 100], (256, 192))
    assert crop.shape == (256, 192, 3)
    with pytest.raises(sample.SampleError, match="outside"):
        sample.crop_person(image, [300, 0, 400, 50], (224, 224))
    t, valid = sample.full_image_camera([1.0, 0.1, -0.2], [100, 50], 100.0, 200, 100, 1000.0)
    assert valid and np.allclose(t, [0.1, -0.2, 20.0])
    assert not sample.full_image_camera([-1.0, 0, 0], [100, 50], 100.0, 200, 100, 1000.0)[1]
