"""Images in, people out: detection, crops, fixed-size batches over all persons of all images,
full-image cameras.

    predictor = Predictor.load("converted/mega_hrnet", tokenizer="converted/mesh_vqvae_54")
    for image in predictor.predict(["photo.jpg"], num_samples=1):
        for person in image.persons:
            person.vertices, person.camera_translation   # (N, 6890, 3) m, (3,) m

Each person's mesh is in camera-aligned axes (x right, y down, z away from the camera, meters),
centred as the tokenizer decodes it; ``vertices + camera_translation`` puts it in the camera
frame of the full image, whose pinhole camera has focal length ``focal_length`` pixels and its
principal point at the image centre (the original demo: 1000 pixels for a 224-pixel crop,
scaled to ``max(width, height)``; the translation from the crop's weak-perspective camera with
:func:`hmr_jax.geometry.cameras.cam_crop_to_full`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from hmr_jax.checkpoints import is_train_workdir
from hmr_jax.detection.base import DetectionError, Detections, Detector, FullImageDetector
from hmr_jax.geometry.cameras import CROP_SIZE, FOCAL_LENGTH, cam_crop_to_full
from hmr_jax.inference.crops import InferenceError, PersonCrop, as_rgb_uint8, crop_person, read_image
from hmr_jax.inference.model import (DEFAULT_BATCH_SIZE, ImageModel, _as_key, bucket_sizes, load_image_model,
                                     pad_rows)
from hmr_jax.mesh.io import load_faces
from hmr_jax.render import MESH_COLOR, PerspectiveCamera, render_mesh, side_view


@dataclasses.dataclass
class Person:
    """One person of one image.

    Attributes:
      index: the person's box index in the image (detection order).
      box: (4,) ``x1, y1, x2, y2`` full-image pixels; score: the detection confidence.
      box_centre: (2,) and box_side: the square crop around the box, full-image pixels.
      vertices: (N, V, 3) the N hypotheses, meters, camera-aligned axes (module docstring).
      tokens: (N, T) int32 mesh tokens.
      rot6d: (6,) predicted global rotation (6D); rotation_matrix: (3, 3) the same as a matrix.
      camera_weak_perspective: (3,) ``(s, tx, ty)`` predicted for the crop.
      camera_translation: (3,) meters: ``vertices + camera_translation`` is the camera frame.
      focal_length: pixels; principal_point: (2,) pixels, the full image's pinhole camera.
      camera_valid: False when the predicted scale ``s <= 0`` (the mesh would lie behind the camera).
    """

    index: int
    box: np.ndarray
    score: float
    box_centre: np.ndarray
    box_side: float
    vertices: np.ndarray
    tokens: np.ndarray
    rot6d: np.ndarray
    rotation_matrix: np.ndarray
    camera_weak_perspective: np.ndarray
    camera_translation: np.ndarray
    focal_length: float
    principal_point: np.ndarray
    camera_valid: bool

    @property
    def num_hypotheses(self) -> int:
        """N."""
        return int(self.vertices.shape[0])

    @property
    def vertices_camera(self) -> np.ndarray:
        """(N, V, 3) the hypotheses in the full image's camera frame, meters."""
        return self.vertices + self.camera_translation

    def spread(self) -> dict | None:
        """How far apart the N > 1 hypotheses are (meters), None for one hypothesis:
        ``mean_vertex_distance_to_mean_m``, ``max_vertex_distance_to_mean_m`` (per-vertex distance to
        the mean mesh) and ``mean_vertex_std_m`` (per-vertex standard deviation, averaged)."""
        if self.num_hypotheses < 2:
            return None
        d = np.linalg.norm(self.vertices - self.vertices.mean(axis=0, keepdims=True), axis=-1)
        return {"mean_vertex_distance_to_mean_m": float(d.mean()), "max_vertex_distance_to_mean_m": float(d.max()),
                "mean_vertex_std_m": float(np.sqrt((d ** 2).mean(axis=0)).mean())}

    def camera(self):
        """The full image's :class:`~hmr_jax.render.PerspectiveCamera` for :attr:`vertices`."""
        return PerspectiveCamera((self.focal_length,) * 2, tuple(float(c) for c in self.principal_point),
                                 tuple(float(t) for t in self.camera_translation))


@dataclasses.dataclass
class ImagePrediction:
    """The people of one image.

    Attributes:
      index: position in the input sequence; path: the file it came from (None for arrays).
      width, height: pixels (0 when the image could not be read).
      persons: the people whose crop could be cut, in box order.
      errors: one line per problem (unreadable image, a box outside the image, ...), each
        naming the fix; the other persons are still predicted.
      image: the (H, W, 3) uint8 RGB image (kept when ``keep_images``), else None.
    """

    index: int
    path: str | None
    width: int
    height: int
    persons: list[Person] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    image: np.ndarray | None = None

    def overlay(self, faces: np.ndarray, image: np.ndarray | None = None, hypothesis: int = 0,
                color=None) -> np.ndarray:
        """Every person's mesh over the image in one picture, depth-ordered (one z-buffer, as the
        original's ``render_rgba_multiple``); persons whose camera is invalid are left out.

        Args:
          faces: (F, 3) mesh faces; image: (H, W, 3) uint8 (default: :attr:`image`).
          hypothesis: which hypothesis of each person.
        Returns:
          (H, W, 3) uint8.
        """
        image = self.image if image is None else image
        if image is None:
            raise InferenceError("overlay needs the image: pass it, or predict with keep_images=True")
        scene = self._scene(faces, hypothesis)
        if scene is None:
            return np.array(image, copy=True)
        return render_mesh(image, *scene, color=MESH_COLOR if color is None else color)

    def _scene(self, faces, hypothesis: int):
        """``(vertices, faces, camera)`` of all persons with a valid camera in one mesh, in the
        image's camera frame; None when there are none."""
        drawn = [p for p in self.persons if p.camera_valid]
        if not drawn:
            return None
        faces = np.asarray(faces)
        nv = drawn[0].vertices.shape[1]
        vertices = np.concatenate([p.vertices[min(hypothesis, p.num_hypotheses - 1)] + p.camera_translation
                                   for p in drawn])
        all_faces = np.concatenate([faces + i * nv for i in range(len(drawn))])
        p0 = drawn[0]
        return vertices, all_faces, PerspectiveCamera((p0.focal_length,) * 2,
                                                      tuple(float(c) for c in p0.principal_point))

    def side_view(self, faces: np.ndarray, hypothesis: int = 0, angle_deg: float = 90.0) -> np.ndarray:
        """Every person's mesh seen from the side (turned ``angle_deg`` about the vertical axis
        through the group's centre), the image's camera, on white; persons whose camera is
        invalid are left out.

        Args:
          faces: (F, 3) mesh faces; hypothesis: which hypothesis of each person.
        Returns:
          (height, width, 3) uint8.
        """
        scene = self._scene(faces, hypothesis)
        if scene is None:
            return np.full((self.height, self.width, 3), 255, np.uint8)
        return side_view(*scene, self.height, self.width, angle_deg=angle_deg)


@dataclasses.dataclass
class _Pending:
    record: ImagePrediction
    crops: list[PersonCrop]
    meta: list[tuple[int, float]]           # (box index, score) per crop
    results: list[dict | None]


def _read_input(item) -> tuple[np.ndarray, str | None]:
    if isinstance(item, (str, os.PathLike)):
        return read_image(item), str(item)
    return as_rgb_uint8(item), None


class Predictor:
    """A loaded image model, the mesh faces, a person detector and the full-image camera."""

    def __init__(self, model: ImageModel, faces: np.ndarray, detector: Detector | None = None,
                 focal_length: float = FOCAL_LENGTH):
        """Args:
          model: the :class:`~hmr_jax.inference.model.ImageModel`.
          faces: (F, 3) int faces of the model's meshes (their largest index < model.num_vertices).
          detector: finds the people when ``predict`` gets no boxes (default: the whole image).
          focal_length: pixels for a 224-pixel crop (1000 as the original demo), scaled to the image.
        """
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise InferenceError(f"faces must be (F, 3) integers, got {faces.shape} {faces.dtype}")
        if faces.size and (faces.max() + 1 != model.num_vertices or faces.min() < 0):
            raise InferenceError(f"the tokenizer decodes {model.num_vertices}-vertex meshes but the faces index "
                                 f"{faces.max() + 1} vertices: give the faces of the tokenizer's mesh (e.g. "
                                 "body_models/template.ply for SMPL's 6890 vertices) or the matching tokenizer")
        self.model = model
        self.faces = faces.astype(np.int32)
        self.detector = detector if detector is not None else FullImageDetector()
        self.focal_length = float(focal_length)

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: str | None = None, *, faces=None,
             detector: Detector | None = None, connections: str | None = None, joint_regressor=None,
             tpose=None, dtype=None, batch_size: int = DEFAULT_BATCH_SIZE,
             focal_length: float = FOCAL_LENGTH, devices: int | None = None) -> "Predictor":
        """Load a converted MEGA / VQ-HPS folder or a ``train.py`` workdir (see
        :func:`~hmr_jax.inference.model.load_image_model` for the arguments).

        ``faces``: an (F, 3) array or a ``.npy`` / ``.ply`` / ``.obj`` file (default: a workdir's
        ``config.faces``, else ``body_models/template.ply``). VQ-HPS's T-pose defaults to the
        faces mesh's vertices, centred, when ``faces`` is a mesh file.
        """
        faces_source = faces
        if faces_source is None:
            saved = {}
            if is_train_workdir(path):
                with open(os.path.join(path, "config.json")) as f:
                    saved = json.load(f)
            faces_source = saved.get("faces") or "body_models/template.ply"
        faces_arr, mesh_vertices = load_faces(faces_source)
        if tpose is None and mesh_vertices is not None:
            tpose = mesh_vertices - mesh_vertices.mean(0)
        model = load_image_model(path, tokenizer, connections=connections, joint_regressor=joint_regressor,
                                 tpose=tpose, dtype=dtype, batch_size=batch_size, devices=devices)
        return cls(model, faces_arr, detector, focal_length)

    # ------------------------------------------------------------------------------------
    def predict(self, images: Sequence, boxes: Sequence | None = None, num_samples: int = 1,
                **kwargs) -> list[ImagePrediction]:
        """People in each image; see :meth:`predict_iter` (this returns its results as a list)."""
        return list(self.predict_iter(images, boxes, num_samples, **kwargs))

    def predict_iter(self, images: Iterable, boxes: Sequence | None = None, num_samples: int = 1, *,
                     mode: str | None = None, steps: int | None = None, temperature: float | None = None,
                     seed: int = 0, key=None, faithful: bool | None = None, keep_images: bool = False,
                     progress: bool = False, max_pending: int | None = None) -> Iterator[ImagePrediction]:
        """People in each image, yielded in input order as soon as all their persons are predicted.

        All persons of all images go through fixed-size batches (the model's ``batch_size``; the
        last one padded to a bucket size), so the number of people per image does not cause
        recompilation.

        Args:
          images: image files and/or (H, W, 3) uint8 RGB arrays.
          boxes: per image, (N, 4) ``x1, y1, x2, y2`` (or (N, 5) with a score) full-image pixels or
            a :class:`~hmr_jax.detection.Detections`; None: the predictor's detector finds them.
          num_samples: hypotheses per person (MEGA; 1 = deterministic unless ``mode``).
          mode, steps, temperature, faithful: see :meth:`ImageModel.predict_crops`.
          seed / key: PRNG seed or key of the stochastic hypotheses (batch ``c`` of the stream uses
            ``fold_in(key, c)``: the same inputs and seed give the same hypotheses).
          keep_images: keep each image in its :class:`ImagePrediction` (for overlays).
          progress: tqdm bars for the images and for the batches.
          max_pending: at most this many images are held waiting for their batch (None: no
            limit); when reached, the persons waiting run as a partial (padded) batch, so a long
            stream of images without people behind one with a person stays bounded in memory
            (videos).
        Raises:
          InferenceError: a setting that fits no image (``num_samples`` for VQ-HPS, ``steps < 1``);
          problems of one image or person are reported in its ``errors`` instead.
        """
        self.model.mode(num_samples, mode)  # settings problems first, before any image is read
        if max_pending is not None and max_pending < 1:
            raise InferenceError(f"max_pending must be >= 1 (or None), got {max_pending}")
        if boxes is not None and hasattr(images, "__len__") and len(boxes) != len(images):
            raise InferenceError(f"boxes must hold one entry per image: {len(boxes)} for {len(images)} images")
        key = _as_key(key, seed)
        settings = dict(num_samples=num_samples, mode=mode, steps=steps, temperature=temperature,
                        faithful=faithful, key=key)
        bar_images = bar_batches = None
        if progress:
            total = len(images) if hasattr(images, "__len__") else None
            bar_images = tqdm(total=total, desc="images", unit="img", dynamic_ncols=True)
            bar_batches = tqdm(desc="batches", unit="batch", dynamic_ncols=True)
        queue: list[_Pending] = []
        waiting: list[tuple[_Pending, int]] = []   # (image, crop slot) not yet predicted
        chunk = 0
        batch = self.model.batch_size
        try:
            for i, item in enumerate(images):
                pending = self._prepare(i, item, None if boxes is None else boxes[i], keep_images)
                queue.append(pending)
                waiting.extend((pending, j) for j in range(len(pending.crops)))
                while len(waiting) >= batch:
                    self._run(waiting[:batch], chunk, settings)
                    waiting, chunk = waiting[batch:], chunk + 1
                    if bar_batches is not None:
                        bar_batches.update(1)
                if max_pending is not None and waiting and len(queue) >= max_pending:
                    self._run(waiting, chunk, settings)
                    waiting, chunk = [], chunk + 1
                    if bar_batches is not None:
                        bar_batches.update(1)
                while queue and all(r is not None for r in queue[0].results):
                    yield self._finish(queue.pop(0))
                    if bar_images is not None:
                        bar_images.update(1)
            if waiting:
                self._run(waiting, chunk, settings)
                if bar_batches is not None:
                    bar_batches.update(1)
            while queue:
                yield self._finish(queue.pop(0))
                if bar_images is not None:
                    bar_images.update(1)
        finally:
            for bar in (bar_images, bar_batches):
                if bar is not None:
                    bar.close()

    def _prepare(self, index: int, item, boxes, keep_images: bool) -> _Pending:
        """Read, detect and crop one image (problems go to the record's errors)."""
        try:
            image, path = _read_input(item)
        except InferenceError as e:
            path = str(item) if isinstance(item, (str, os.PathLike)) else None
            return _Pending(ImagePrediction(index, path, 0, 0, errors=[str(e)]), [], [], [])
        h, w = image.shape[:2]
        record = ImagePrediction(index, path, w, h, image=image if keep_images else None)
        name = path if path is not None else f"image {index}"
        try:
            if boxes is None:
                found = self.detector.detect(image, path)
            elif isinstance(boxes, Detections):
                found = boxes
            else:
                arr = np.asarray(boxes, np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
                if arr.shape[1] not in (4, 5):
                    raise InferenceError(f"boxes must be (N, 4) or (N, 5), got {np.shape(boxes)}")
                found = Detections(arr[:, :4], arr[:, 4] if arr.shape[1] == 5 else np.ones(len(arr)))
        except (DetectionError, InferenceError, ValueError) as e:
            record.errors.append(f"{name}: {e}")
            return _Pending(record, [], [], [])
        crops, meta = [], []
        for k, (box, score) in enumerate(zip(found.boxes, found.scores)):
            try:
                crops.append(crop_person(image, box, self.model.geometry))
                meta.append((k, float(score)))
            except InferenceError as e:
                record.errors.append(f"{name} person {k}: {e}")
        return _Pending(record, crops, meta, [None] * len(crops))

    def _run(self, rows: list[tuple[_Pending, int]], chunk: int, settings: dict) -> None:
        """One fixed-size batch of persons (from any images) through the model and the cameras."""
        crops = np.stack([p.crops[j].image for p, j in rows])
        out = self.model.predict_crops(crops, settings["num_samples"], mode=settings["mode"],
                                       key=settings["key"], steps=settings["steps"],
                                       temperature=settings["temperature"], faithful=settings["faithful"],
                                       first_chunk=chunk)
        # cameras for the padded batch size, so that these small functions compile once per size too
        size = next(b for b in bucket_sizes(self.model.batch_size) if b >= len(rows))
        centre = pad_rows(np.stack([p.crops[j].centre for p, j in rows]), size)
        side = pad_rows(np.array([p.crops[j].side for p, j in rows]), size)
        wh = pad_rows(np.array([(p.record.width, p.record.height) for p, j in rows], np.float64), size)
        focal = self.focal_length / CROP_SIZE * wh.max(axis=1)
        cam = pad_rows(out["cam"].astype(np.float64), size)
        # the models' camera maps to [-r, r] over the crop (r = keypoint_range, 0.5 for ViT):
        # cam_crop_to_full takes the [-1, 1] convention, i.e. the scale s / r
        cam_unit = cam * np.array([1.0 / self.model.geometry.keypoint_range, 1.0, 1.0])
        translation = np.asarray(cam_crop_to_full(cam_unit, centre, side, wh, focal))
        for r, (p, j) in enumerate(rows):
            p.results[j] = {k: v[r] for k, v in out.items()} | {"translation": translation[r], "focal": focal[r]}

    def _finish(self, pending: _Pending) -> ImagePrediction:
        record = pending.record
        for crop, (k, score), res in zip(pending.crops, pending.meta, pending.results):
            record.persons.append(Person(
                index=k, box=crop.box, score=score, box_centre=crop.centre, box_side=crop.side,
                vertices=res["vertices"], tokens=res["tokens"], rot6d=res["rot6d"], rotation_matrix=res["rotmat"],
                camera_weak_perspective=res["cam"], camera_translation=res["translation"],
                focal_length=float(res["focal"]), principal_point=np.array([record.width / 2.0, record.height / 2.0]),
                camera_valid=bool(res["cam"][0] > 0)))
        return record
