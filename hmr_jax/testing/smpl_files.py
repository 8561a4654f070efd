"""Stand-in SMPL / SMPL+H model files for tests, benchmarks and trying things out (the real ones are licensed).

The stand-in has the real kinematic trees (24 SMPL joints, 52 SMPL+H joints), 6890 vertices
and arrays of the real shapes and file layouts, but synthetic values: a stick figure with
approximate SMPL rest joint positions (T-pose, y up, meters), vertices scattered in tubes
around the bones, skinning weights that follow the bones and blend at the joints, a
joint regressor that averages the vertices around each joint, smooth random shape blend
shapes and small random pose blend shapes. It is a valid body model in every respect that
the code checks, so round trips (parameters -> mesh -> fit) are meaningful on it.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import scipy.sparse

from hmr_jax.files import atomic_open

# Parents of the 24 SMPL joints: pelvis, hips, spine, knees, spine2, ankles, spine3, feet,
# neck, collars, head, shoulders, elbows, wrists, hands.
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def _hand_parents(wrist: int, first: int) -> list[int]:
    # Five fingers (index, middle, pinky, ring, thumb) of three joints each, from the wrist.
    out = []
    for finger in range(5):
        base = first + 3 * finger
        out += [wrist, base, base + 1]
    return out


# SMPL+H: the 22 body joints of SMPL (no hand joints), then 15 left-hand and 15 right-hand joints.
SMPLH_PARENTS = tuple(list(SMPL_PARENTS[:22]) + _hand_parents(20, 22) + _hand_parents(21, 37))

NUM_VERTICES = 6890
NUM_FACES = 13776

# Approximate rest joint positions of SMPL's mean shape, meters (T-pose, y up, z forward).
_SMPL_JOINTS = np.array([
    [0.00, -0.22, 0.03], [0.07, -0.31, 0.02], [-0.07, -0.31, 0.02], [0.00, -0.11, 0.00],
    [0.10, -0.69, 0.02], [-0.10, -0.70, 0.02], [0.00, 0.02, 0.03], [0.09, -1.09, -0.03],
    [-0.09, -1.09, -0.03], [0.00, 0.07, 0.03], [0.11, -1.14, 0.09], [-0.12, -1.14, 0.10],
    [0.00, 0.29, -0.01], [0.08, 0.20, -0.01], [-0.08, 0.20, -0.01], [0.01, 0.36, 0.04],
    [0.18, 0.22, -0.02], [-0.18, 0.22, -0.02], [0.43, 0.21, -0.04], [-0.43, 0.21, -0.04],
    [0.68, 0.22, -0.04], [-0.68, 0.22, -0.04], [0.76, 0.21, -0.06], [-0.77, 0.22, -0.06],
])


def rest_joints(kind: str) -> np.ndarray:
    """Approximate rest joint positions (J, 3), meters, for 'smpl' or 'smplh'."""
    if kind == "smpl":
        return _SMPL_JOINTS.copy()
    body = _SMPL_JOINTS[:22]
    hands = []
    for side, wrist in ((1.0, body[20]), (-1.0, body[21])):
        for finger, z in enumerate((0.03, 0.01, -0.03, -0.01, 0.05)):  # index, middle, pinky, ring, thumb
            start = wrist + np.array([side * (0.09 if finger < 4 else 0.03), -0.01, z])
            step = np.array([side * 0.03, 0.0, 0.01 if finger == 4 else 0.0])
            hands += [start, start + step, start + 2 * step]
    return np.concatenate([body, np.array(hands)], axis=0)


def _bones(parents: tuple[int, ...], joints: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(owner joint, start, end) segments: joint -> child, and a short stub past each leaf."""
    children = {j: [c for c, p in enumerate(parents) if p == j] for j in range(len(parents))}
    bones = []
    for j in range(len(parents)):
        for c in children[j]:
            bones.append((j, joints[j], joints[c]))
        if not children[j]:
            direction = joints[j] - joints[parents[j]]
            bones.append((j, joints[j], joints[j] + 0.6 * direction))
    return bones


def make_standin_arrays(kind: str = "smplh", num_betas: int | None = None, seed: int = 0,
                        faces: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Arrays of a stand-in model in the key names and shapes of the real files.

    Args:
      kind: "smplh" (52 joints, 16 betas like the extended SMPL+H release) or "smpl"
        (24 joints, 10 betas).
      num_betas: override the number of shape blend shapes.
      seed: NumPy seed.
      faces: optional (F, 3) real faces (e.g. of ``template.ply``); random ones otherwise.
    Returns:
      dict with v_template (6890, 3), shapedirs (6890, 3, S), posedirs (6890, 3, 9(J-1)),
      J_regressor (J, 6890), weights (6890, J), kintree_table (2, J), f (F, 3), J (J, 3).
    """
    if kind not in ("smpl", "smplh"):
        raise ValueError(f"kind must be 'smpl' or 'smplh', got {kind!r}")
    rng = np.random.default_rng(seed)
    parents = SMPL_PARENTS if kind == "smpl" else SMPLH_PARENTS
    n_j = len(parents)
    num_betas = num_betas or (10 if kind == "smpl" else 16)
    joints = rest_joints(kind)
    bones = _bones(parents, joints)
    lengths = np.array([np.linalg.norm(e - s) for _, s, e in bones])
    radius = np.array([0.012 if owner >= 22 else 0.045 for owner, _, _ in bones])  # hands / fingers thin
    share = lengths * radius + 1e-4
    counts = np.maximum(12, np.floor(share / share.sum() * NUM_VERTICES)).astype(int)
    while counts.sum() > NUM_VERTICES:
        counts[np.argmax(counts)] -= 1
    counts[np.argmax(counts)] += NUM_VERTICES - counts.sum()
    v_template, weights = _skinned_tubes(rng, bones, counts, radius, parents)
    j_reg = np.zeros((n_j, NUM_VERTICES))
    for j in range(n_j):
        near = np.argsort(np.linalg.norm(v_template - joints[j], axis=1))[:12]
        j_reg[j, near] = rng.uniform(0.5, 1.5, near.size)
    j_reg /= j_reg.sum(1, keepdims=True)
    shapedirs = _shape_blend_shapes(rng, v_template, num_betas)
    posedirs = rng.normal(0, 1e-3, (NUM_VERTICES, 3, 9 * (n_j - 1)))
    if faces is None:
        faces = rng.integers(0, NUM_VERTICES, (NUM_FACES, 3))
    kintree = np.zeros((2, n_j), np.int64)
    kintree[0] = parents
    kintree[0, 0] = 4294967295  # the real files store -1 as uint32
    kintree[1] = np.arange(n_j)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_reg,
        "weights": weights,
        "kintree_table": kintree,
        "f": np.asarray(faces).astype(np.uint32),
        "J": j_reg @ v_template,
    }


def _skinned_tubes(rng: np.random.Generator, bones, counts: np.ndarray, radius: np.ndarray,
                   parents: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices scattered in a tube around each bone (V, 3) and their skinning weights (V, J):
    the bone's joint, blended with its parent's near the bone's start."""
    n_j = len(parents)
    verts, weights = [], []
    for (owner, start, end), n, r in zip(bones, counts, radius):
        axis = end - start
        unit = axis / np.linalg.norm(axis)
        ortho = np.cross(unit, [0.3, 0.5, 0.8])
        ortho /= np.linalg.norm(ortho)
        ortho2 = np.cross(unit, ortho)
        u = rng.uniform(0.0, 1.0, n)
        phi = rng.uniform(0, 2 * np.pi, n)
        rad = r * rng.uniform(0.6, 1.0, n)
        verts.append(start + u[:, None] * axis + rad[:, None] * (np.cos(phi)[:, None] * ortho + np.sin(phi)[:, None] * ortho2))
        w = np.zeros((n, n_j))
        own = 0.5 + 0.5 * np.minimum(u / 0.25, 1.0) if owner > 0 else np.ones(n)
        w[:, owner] = own
        if owner > 0:
            w[:, parents[owner]] += 1.0 - own
        weights.append(w)
    v_template = np.concatenate(verts)
    weights = np.concatenate(weights)
    # A little weight on a random second joint keeps the stand-in from being too regular.
    extra = rng.integers(0, n_j, NUM_VERTICES)
    weights[np.arange(NUM_VERTICES), extra] += 0.02
    weights /= weights.sum(1, keepdims=True)
    return v_template, weights


def _shape_blend_shapes(rng: np.random.Generator, v_template: np.ndarray, num_betas: int) -> np.ndarray:
    """Smooth shape blend shapes (V, 3, S), ~1-2 cm per unit: per beta a few random Gaussian
    bumps plus a random scaling of the body (so that betas are not confused with a rigid motion)."""
    centred = v_template - v_template.mean(0)
    shapedirs = np.zeros((NUM_VERTICES, 3, num_betas))
    for s in range(num_betas):
        field = centred * rng.normal(0, 0.01, 3)
        for c in v_template[rng.integers(0, NUM_VERTICES, 3)]:
            bump = np.exp(-np.sum((v_template - c) ** 2, axis=1) / (2 * 0.2**2))
            field += bump[:, None] * rng.normal(0, 0.02, 3)
        shapedirs[:, :, s] = field
    return shapedirs


def write_standin_model(path: str | os.PathLike, kind: str = "smplh", **kwargs) -> dict[str, np.ndarray]:
    """Write a stand-in model file: ``.npz`` (extended SMPL+H layout) or ``.pkl`` (plain arrays).

    The ``.pkl`` stores the joint regressor as a ``scipy.sparse.csc_matrix`` like the SMPL
    release (but plain arrays instead of chumpy objects). Written to a temp name then renamed.

    Args:
      path: destination ending in ``.npz`` or ``.pkl``.
      kind: "smplh" or "smpl".
      **kwargs: passed to :func:`make_standin_arrays`.
    Returns:
      the arrays written (dense), for comparisons.
    """
    arrays = make_standin_arrays(kind, **kwargs)
    path = os.fspath(path)
    if not path.endswith((".npz", ".pkl")):
        raise ValueError(f"{path}: use a .npz or .pkl file name")
    with atomic_open(path, "wb") as fh:
        if path.endswith(".npz"):
            np.savez(fh, **arrays, bs_style=np.array("lbs"), bs_type=np.array("lrotmin"))
        else:
            data = dict(arrays)
            data["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])
            data["bs_style"], data["bs_type"] = "lbs", "lrotmin"
            pickle.dump(data, fh, protocol=2)
    return arrays
