"""Files and pictures of predicted people shared by ``sample.py`` and the web app
(:mod:`hmr_jax.app`): meshes (``.obj``, ``.glb``), SMPL(+H) parameter files, framing cameras.
"""
from __future__ import annotations

import os

import numpy as np

from hmr_jax.files import atomic_open
from hmr_jax.mesh.io import write_glb, write_mesh
from hmr_jax.render import PerspectiveCamera

#: camera-aligned axes (x right, y down, z away) -> glTF's (y up, the viewer on +z)
GLTF_FROM_CAMERA = np.array([1.0, -1.0, -1.0], np.float32)


def framing_camera(vertices: np.ndarray, size: int) -> PerspectiveCamera:
    """A camera that shows the whole mesh in a ``size`` x ``size`` picture (used when the
    predicted camera puts it behind the image plane, and for meshes without a camera).

    Args:
      vertices: (V, 3) meters, camera-aligned axes.
      size: picture side, pixels.
    """
    centre = 0.5 * (vertices.min(0) + vertices.max(0))
    extent = float(np.max(vertices.max(0) - vertices.min(0))) + 1e-6
    focal = float(size)
    tz = 1.3 * focal * extent / size + extent
    c = (size - 1) / 2
    return PerspectiveCamera((focal, focal), (c, c), tuple((-centre + np.array([0, 0, tz])).tolist()))


def person_record(person) -> dict:
    """A :class:`~hmr_jax.inference.Person` as JSON (``results.json``): ``person`` (box index),
    ``box`` / ``box_centre`` / ``box_side`` px, ``score``, the crop's weak-perspective camera,
    ``camera_translation_m``, ``focal_length_px``, ``principal_point_px``, the 6D rotation and its
    matrix, an empty ``hypotheses`` list to fill, and a ``warning`` when the camera is invalid."""
    record = {"person": person.index, "box": person.box.tolist(), "score": person.score,
              "box_centre": person.box_centre.tolist(), "box_side": person.box_side,
              "camera_weak_perspective": person.camera_weak_perspective.tolist(),
              "camera_translation_m": person.camera_translation.tolist(),
              "focal_length_px": person.focal_length, "principal_point_px": person.principal_point.tolist(),
              "rotation_6d": person.rot6d.tolist(), "rotation_matrix": person.rotation_matrix.tolist(),
              "hypotheses": []}
    if not person.camera_valid:
        record["warning"] = "predicted camera scale <= 0: the mesh is behind the camera and not drawn over the image"
    return record


def write_mesh_files(path_stem: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
                     glb: bool = True, camera_axes: bool = True) -> tuple[str, str | None]:
    """``STEM.obj`` (the vertices as given, meters) and, with ``glb``, ``STEM.glb``, both atomic.

    ``camera_axes``: the vertices are in camera-aligned axes (predicted people), turned into
    glTF's for the ``.glb`` (:data:`GLTF_FROM_CAMERA`); False: already y up (generated meshes).

    Returns:
      the file names ``(obj, glb or None)``.
    Raises:
      ImportError: ``glb`` without trimesh (the ``.obj`` is written first).
    """
    stem = os.fspath(path_stem)
    write_mesh(stem + ".obj", vertices, faces)
    if not glb:
        return os.path.basename(stem) + ".obj", None
    gltf = np.asarray(vertices, np.float32) * (GLTF_FROM_CAMERA if camera_axes else 1.0)
    write_glb(stem + ".glb", gltf, faces)
    return os.path.basename(stem) + ".obj", os.path.basename(stem) + ".glb"


def write_smpl_params(path: str | os.PathLike, params: dict, person) -> None:
    """One mesh's fitted SMPL(+H) parameters (:func:`~hmr_jax.inference.fit_body_params`) as an
    ``.npz`` in smplx's names (``betas``, ``global_orient``, ``body_pose``, ``transl``, ...; the
    mesh's frame), with the person's full-image camera: ``camera_translation`` (1, 3) m,
    ``focal_length`` px, ``principal_point`` (2,) px. Written atomically."""
    arrays = {k: v for k, v in params.items() if k != "vertex_error_m"}
    arrays.update(camera_translation=np.asarray(person.camera_translation, np.float32)[None],
                  focal_length=np.float32(person.focal_length),
                  principal_point=np.asarray(person.principal_point, np.float32))
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)
