"""A box person: the synthetic data generator's body model for tests (no Anny, no torch).

``python -m data_prep.synthetic --standin-body`` and :func:`data_prep.synthetic.generate`
(``body=StandInBody()``) use it; ten boxes on a stick skeleton, 80 vertices, symmetric.
"""
from __future__ import annotations

import numpy as np

from hmr_jax.geometry.rotations_np import euler_xyz_to_matrix
from hmr_jax.mesh.symmetry import mirror_permutation


class StandInBody:
    """A small box-person (10 boxes, 80 vertices) with random joint angles: for tests, no anny.

    Same interface as :class:`data_prep.synthetic.AnnyBody` (``faces``, ``template``,
    ``vertex_regions``, ``mirror``, ``num_vertices``, ``sample(rngs)``); the COCO keypoints are
    the box joints.
    """

    name = "standin"

    # (parent point, child point) segments of a rest skeleton (canonical frame, meters)
    _POINTS = {
        "pelvis": (0.0, 0.95, 0.0), "neck": (0.0, 1.45, 0.0), "head": (0.0, 1.65, 0.0),
        "l_shoulder": (0.18, 1.42, 0.0), "l_elbow": (0.42, 1.30, 0.0), "l_wrist": (0.62, 1.18, 0.0),
        "l_hip": (0.1, 0.92, 0.0), "l_knee": (0.1, 0.5, 0.0), "l_ankle": (0.1, 0.08, 0.0),
    }
    _SEGMENTS = [("pelvis", "neck", 0.14), ("neck", "head", 0.1), ("l_shoulder", "l_elbow", 0.045),
                 ("l_elbow", "l_wrist", 0.04), ("l_hip", "l_knee", 0.07), ("l_knee", "l_ankle", 0.055)]

    def __init__(self):
        pts = dict(self._POINTS)
        for k, (x, y, z) in list(pts.items()):
            if k.startswith("l_"):
                pts["r_" + k[2:]] = (-x, y, z)
        self.points = {k: np.array(v) for k, v in pts.items()}
        segs = []
        for a, b, r in self._SEGMENTS:
            segs.append((a, b, r))
            if a.startswith("l_"):
                segs.append(("r_" + a[2:], "r_" + b[2:], r))
        self.segments = segs
        corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (0, 1) for sz in (-1, 1)], float)
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        box_faces = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
        self._corners = corners
        self.faces = np.concatenate([box_faces + 8 * i for i in range(len(segs))]).astype(np.int32)
        self.template = self._pose({})
        self.vertex_regions = np.repeat([1 if s[0] in ("pelvis",) else 0 for s in segs], 8).astype(np.int32)
        self.mirror = mirror_permutation(self.template)

    @property
    def num_vertices(self) -> int:
        return len(self.template)

    def _pose(self, bends: dict[str, np.ndarray]) -> np.ndarray:
        pts = {k: v.copy() for k, v in self.points.items()}
        for a, b, _ in self.segments:  # parents come first in the list
            if b in bends:
                pts[b] = pts[a] + bends[b] @ (self.points[b] - self.points[a])
                for a2, b2, _ in self.segments:
                    if a2 == b:
                        pts[b2] = pts[b] + bends[b] @ (self.points[b2] - self.points[b])
        out = []
        for a, b, r in self.segments:
            axis = pts[b] - pts[a]
            length = np.linalg.norm(axis)
            y = axis / length
            x = np.cross(y, [0.0, 0.0, 1.0])
            x = x / np.linalg.norm(x) if np.linalg.norm(x) > 1e-6 else np.array([1.0, 0.0, 0.0])
            z = np.cross(x, y)
            frame = np.stack([x * r, y * length, z * r], axis=1)
            out.append(pts[a] + self._corners @ frame.T)
        self._last_points = pts
        return np.concatenate(out)

    def sample(self, rngs):
        """One body per generator -> canonical vertices (B, 80, 3) and COCO keypoints (B, 17, 3), m."""
        verts, kps = [], []
        for rng in rngs:
            bends = {k: euler_xyz_to_matrix(np.deg2rad(rng.uniform(-40, 40, size=3))) for k in ("l_elbow", "r_elbow", "l_knee", "r_knee")}
            v = self._pose(bends)
            p = self._last_points
            kp = np.stack([p["head"], p["head"], p["head"], p["head"], p["head"], p["l_shoulder"], p["r_shoulder"],
                           p["l_elbow"], p["r_elbow"], p["l_wrist"], p["r_wrist"], p["l_hip"], p["r_hip"],
                           p["l_knee"], p["r_knee"], p["l_ankle"], p["r_ankle"]])
            verts.append(v)
            kps.append(kp)
        return np.stack(verts), np.stack(kps)
