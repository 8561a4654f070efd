"""Reading SMPL / SMPL+H model files into plain NumPy arrays, without chumpy.

Two formats are understood:

* ``model.npz`` of the extended SMPL+H release (the one AMASS uses), laid out as the
  original projects expect: ``body_models/smplh/{neutral,m,f}/model.npz``;
* SMPL ``.pkl`` files (``SMPL_NEUTRAL.pkl``, ``basicModel_f_lbs_10_207_0_v1.0.0.pkl``, ...),
  written by Python 2 and holding ``chumpy`` objects and a ``scipy.sparse`` joint regressor.
  chumpy does not install on current Python, so the pickle is read by a restricted
  unpickler that maps every ``chumpy`` class to a stand-in and keeps the array it wraps
  (the pickled state ``x``). Nothing outside a short allow-list (NumPy arrays, SciPy sparse
  matrices, builtins) can be constructed while reading, so a malicious file cannot run code.

Everything here is NumPy; :mod:`hmr_jax.body.model` turns the result into a JAX model.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import pickle
from typing import Any

import numpy as np
import scipy.sparse

from hmr_jax.errors import UserError
from hmr_jax.safe_read import RestrictedUnpickler, charge_current, read_npz, restricted_pickle_load

LAYOUT_HELP = """Expected layout (as the original MEGA / VQ-HPS instructions):
  body_models/
    smplh/neutral/model.npz   # "Extended SMPL+H model (used in AMASS)", folder 'neutral'
    smplh/m/model.npz         # the release's 'male' folder, renamed 'm'
    smplh/f/model.npz         # the release's 'female' folder, renamed 'f'
  or SMPL pickles (chumpy-free reading is built in):
    body_models/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl  (or basicModel_{neutral,m,f}_lbs_10_207_0_v1.0.0.pkl)
Pass load_body_model() a model file, a gender folder, the 'smplh' folder or 'body_models'."""

# Gender names accepted by load_body_model, and the folder / file stems each one may use.
GENDER_ALIASES = {
    "neutral": "neutral", "n": "neutral",
    "male": "male", "m": "male",
    "female": "female", "f": "female",
}
_GENDER_FOLDERS = {"neutral": ("neutral",), "male": ("m", "male"), "female": ("f", "female")}
_SMPL_PKL_STEMS = {
    "neutral": ("smpl_neutral", "basicmodel_neutral_lbs_10_207_0_v1.1.0", "basicmodel_neutral_lbs_10_207_0_v1.0.0"),
    "male": ("smpl_male", "basicmodel_m_lbs_10_207_0_v1.1.0", "basicmodel_m_lbs_10_207_0_v1.0.0"),
    "female": ("smpl_female", "basicmodel_f_lbs_10_207_0_v1.1.0", "basicmodel_f_lbs_10_207_0_v1.0.0"),
}

# Joint counts of the two supported model kinds.
NUM_JOINTS = {"smpl": 24, "smplh": 52}
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


#: the largest model file (and array inside one) accepted; SMPL+H's model.npz is ~40 MB
MAX_MODEL_FILE_BYTES = 1 << 30
#: the largest dense array a pickled sparse matrix may expand to
MAX_DENSE_ELEMENTS = 1 << 22


class BodyModelFileError(UserError, ValueError):
    """A body model file is missing, of an unknown kind, or malformed."""


@dataclasses.dataclass(frozen=True)
class BodyModelArrays:
    """The arrays of one SMPL / SMPL+H model, validated, float64 / int32 NumPy.

    Attributes:
      v_template: (V, 3) rest-pose template vertices, meters.
      shapedirs: (V, 3, S) shape blend shapes, meters per unit beta.
      posedirs: (V, 3, 9 * (J - 1)) pose blend shapes, meters per unit of (R - I) entries.
      J_regressor: (J, V) dense joint regressor (rows sum to ~1).
      weights: (V, J) skinning weights (rows sum to ~1).
      parents: (J,) parent index of each joint, -1 for the root.
      faces: (F, 3) triangle vertex indices.
      kind: "smpl" (24 joints) or "smplh" (52 joints).
      gender: "neutral", "male", "female" or "unknown".
      path: the file it was read from.
    """

    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    faces: np.ndarray
    kind: str
    gender: str
    path: str


# --------------------------------------------------------------------------- chumpy-free pickles


class ChumpyStandIn:
    """Takes the place of any ``chumpy`` class while unpickling; keeps the pickled state.

    chumpy's ``Ch`` objects pickle their value as the attribute ``x`` of their state.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            first = state[0] if isinstance(state[0], dict) else {}
            charge_current(len(first) + len(state[1]), "chumpy state")
            state = {**first, **state[1]}  # (dict, slots) form
        self.__dict__["_state"] = state

    def to_array(self, key: str, depth: int = 0) -> np.ndarray:
        state = self.__dict__.get("_state")
        if isinstance(state, dict) and "x" in state:
            value = state["x"]
            if isinstance(value, ChumpyStandIn):
                if depth > 32:
                    raise BodyModelFileError(f"'{key}' is a chumpy object nested too deeply (or in a cycle)")
                return value.to_array(key, depth + 1)
            return np.asarray(value)
        raise BodyModelFileError(
            f"'{key}' is a chumpy object of class {type(self).__qualname__} whose pickled state has "
            f"no array 'x' (state keys: {sorted(state) if isinstance(state, dict) else type(state)}); "
            "only plain chumpy.Ch values can be read without chumpy. Re-save the model with plain "
            "NumPy arrays (e.g. on a machine with chumpy: {k: np.array(v) for k, v in data.items()})."
        )


class SparseStandIn:
    """Takes the place of a pickled ``scipy.sparse`` matrix; rebuilt from its CSC/CSR arrays."""

    _format = "csc"

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"a sparse matrix's state is a {type(state).__name__}, not a dict")
        self.__dict__["_state"] = dict(state)

    def to_array(self, key: str, depth: int = 0) -> np.ndarray:
        s = self.__dict__.get("_state")
        if not isinstance(s, dict):
            raise BodyModelFileError(f"'{key}': the pickled sparse matrix has no state")
        try:
            shape = tuple(int(n) for n in s.get("_shape", s.get("shape")))
            if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] > MAX_DENSE_ELEMENTS:
                raise ValueError(f"shape {shape} is not a 2-D matrix of at most {MAX_DENSE_ELEMENTS} entries")
            build = scipy.sparse.csc_matrix if self._format == "csc" else scipy.sparse.csr_matrix
            return np.asarray(build((s["data"], s["indices"], s["indptr"]), shape=shape).toarray())
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as err:
            raise BodyModelFileError(f"'{key}': cannot rebuild the pickled sparse matrix ({err})") from err


class _CsrStandIn(SparseStandIn):
    _format = "csr"


def _chumpy_class(name: str) -> type:
    return type(name, (ChumpyStandIn,), {})


class _ModelUnpickler(RestrictedUnpickler):
    """Unpickler that builds only arrays, sparse matrices and chumpy stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _chumpy_class(name)
        if module.startswith("scipy.sparse"):
            if name in ("csc_matrix", "csc_array"):
                return SparseStandIn
            if name in ("csr_matrix", "csr_array"):
                return _CsrStandIn
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': a body model pickle should only hold "
                "NumPy arrays, SciPy sparse matrices and chumpy arrays") from None


def read_model_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Read a SMPL-style model ``.pkl`` (Python 2, latin1) without importing chumpy.

    Args:
      path: the pickle file (at most :data:`MAX_MODEL_FILE_BYTES`).
    Returns:
      dict of its entries; chumpy values and sparse matrices are converted to dense
      NumPy arrays, other values are returned as stored.
    Raises:
      BodyModelFileError: unreadable or not a dict of model arrays.
    """
    data = restricted_pickle_load(path, _model_error, max_bytes=MAX_MODEL_FILE_BYTES,
                                  unpickler=_ModelUnpickler, what="SMPL model pickle",
                                  max_array_bytes=MAX_MODEL_FILE_BYTES)
    if not isinstance(data, dict):
        raise BodyModelFileError(f"{path}: the pickle holds a {type(data).__name__}, not a dict of model arrays.\n{LAYOUT_HELP}")
    out = {}
    for key, value in data.items():
        key = key.decode("latin1") if isinstance(key, bytes) else key
        if not isinstance(key, str):
            raise BodyModelFileError(f"{path}: the pickle's dict has a key of type {type(key).__name__} "
                                     f"({key!r}); a model file maps names to arrays")
        if isinstance(value, (ChumpyStandIn, SparseStandIn)):
            value = _standin_array(value, key, path)
        out[key] = value
    return out


def _model_error(message: str) -> BodyModelFileError:
    return BodyModelFileError(f"{message}\n{LAYOUT_HELP}")


def _standin_array(value, key: str, path) -> np.ndarray:
    try:
        return value.to_array(key)
    except BodyModelFileError as err:
        raise BodyModelFileError(f"{path}: {err}") from None
    except RecursionError:
        raise BodyModelFileError(f"{path}: '{key}' is a chumpy object nested too deeply (or in a cycle)") from None


# --------------------------------------------------------------------------- npz


def read_model_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the required arrays of an SMPL+H ``model.npz`` (no pickled objects are loaded).

    Args:
      path: the ``.npz`` file (at most :data:`MAX_MODEL_FILE_BYTES` of arrays).
    Returns:
      dict with the keys of :data:`REQUIRED_KEYS` that the file has.
    Raises:
      BodyModelFileError: not a readable npz, or a needed array is stored as Python objects.
    """
    return read_npz(path, _model_error, max_bytes=MAX_MODEL_FILE_BYTES, keys=REQUIRED_KEYS)


# --------------------------------------------------------------------------- validation


def _dense(value: Any, key: str, path: str) -> np.ndarray:
    if scipy.sparse.issparse(value):
        value = value.toarray()
    if isinstance(value, ChumpyStandIn | SparseStandIn):
        value = _standin_array(value, key, path)
    try:
        arr = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - any conversion failure is a malformed file
        raise BodyModelFileError(f"{path}: entry '{key}' is not an array ({err})") from err
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == bool):
        raise BodyModelFileError(f"{path}: entry '{key}' is not a real numeric array (dtype {arr.dtype})")
    return arr


def validate_model_dict(data: dict[str, Any], path: str, gender: str = "unknown") -> BodyModelArrays:
    """Check a dict of model arrays and return them as :class:`BodyModelArrays`.

    Args:
      data: entries of a model file (``v_template``, ``shapedirs``, ``posedirs``,
        ``J_regressor``, ``weights``, ``kintree_table``, ``f``).
      path: file name, for error messages.
      gender: recorded in the result.
    Raises:
      BodyModelFileError: naming the missing key or the inconsistent shape.
    """
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise BodyModelFileError(
            f"{path}: missing {missing} (has {sorted(map(str, data))}); this is not an SMPL / SMPL+H model file.\n{LAYOUT_HELP}"
        )
    arr = {k: _dense(data[k], k, path) for k in REQUIRED_KEYS}
    v_template = arr["v_template"].astype(np.float64)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise BodyModelFileError(f"{path}: v_template has shape {v_template.shape}, expected (V, 3)")
    n_v = v_template.shape[0]
    j_reg = arr["J_regressor"].astype(np.float64)
    if j_reg.ndim != 2 or j_reg.shape[1] != n_v:
        raise BodyModelFileError(f"{path}: J_regressor has shape {j_reg.shape}, expected (J, {n_v})")
    n_j = j_reg.shape[0]
    kind = {v: k for k, v in NUM_JOINTS.items()}.get(n_j)
    if kind is None:
        raise BodyModelFileError(
            f"{path}: {n_j} joints; only SMPL (24 joints) and SMPL+H (52 joints) models are supported "
            "(SMPL-X and MANO files are not)"
        )
    expected = {
        "shapedirs": (n_v, 3, None),
        "posedirs": (n_v, 3, 9 * (n_j - 1)),
        "weights": (n_v, n_j),
        "kintree_table": (2, n_j),
        "f": (None, 3),
    }
    for key, shape in expected.items():
        got = arr[key].shape
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            want = tuple("*" if e is None else e for e in shape)
            raise BodyModelFileError(f"{path}: {key} has shape {got}, expected {want} for a {n_v}-vertex {n_j}-joint model")
    parents = arr["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, n_j)):
        raise BodyModelFileError(f"{path}: kintree_table is not a tree in topological order (parents {parents.tolist()})")
    faces = arr["f"].astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n_v):
        raise BodyModelFileError(f"{path}: faces index vertices outside [0, {n_v})")
    floats = {k: arr[k].astype(np.float64) for k in ("shapedirs", "posedirs", "weights")}
    for key, value in {**floats, "v_template": v_template, "J_regressor": j_reg}.items():
        if not np.all(np.isfinite(value)):
            raise BodyModelFileError(f"{path}: {key} contains NaN or infinite values")
    return BodyModelArrays(
        v_template=v_template,
        shapedirs=floats["shapedirs"],
        posedirs=floats["posedirs"],
        J_regressor=j_reg,
        weights=floats["weights"],
        parents=parents.astype(np.int32),
        faces=faces.astype(np.int32),
        kind=kind,
        gender=gender,
        path=str(path),
    )


# --------------------------------------------------------------------------- locating files


def normalize_gender(gender: str) -> str:
    """'neutral' / 'male' / 'female' from any accepted alias ('n', 'm', 'f', any case)."""
    key = str(gender).strip().lower()
    if key not in GENDER_ALIASES:
        raise ValueError(f"unknown gender {gender!r}; use one of 'neutral', 'male' ('m'), 'female' ('f')")
    return GENDER_ALIASES[key]


def resolve_model_path(path: str | os.PathLike, gender: str = "neutral") -> pathlib.Path:
    """Find the model file for ``gender`` from a file, gender folder, ``smplh`` or ``body_models`` folder.

    Args:
      path: a ``.npz`` / ``.pkl`` file, or a folder laid out as :data:`LAYOUT_HELP` shows.
      gender: 'neutral', 'male' / 'm', 'female' / 'f'.
    Returns:
      the path of the model file.
    Raises:
      FileNotFoundError: with the expected layout when nothing matches.
    """
    gender = normalize_gender(gender)
    p = pathlib.Path(path).expanduser()
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"body model path {p} does not exist.\n{LAYOUT_HELP}")
    candidates = []
    folders = _GENDER_FOLDERS[gender]
    for base in (p, p / "smplh", p / "smpl"):
        candidates.append(base / "model.npz")
        candidates += [base / g / "model.npz" for g in folders]
    for base in (p, p / "smpl", p / "smplh"):
        if base.is_dir():
            by_lower = {c.name.lower(): c for c in base.iterdir() if c.is_file()}
            candidates += [by_lower[s + ".pkl"] for s in _SMPL_PKL_STEMS[gender] if s + ".pkl" in by_lower]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no {gender} body model found under {p}.\n{LAYOUT_HELP}")


def read_body_model_file(path: str | os.PathLike, gender: str = "unknown") -> BodyModelArrays:
    """Read and validate one model file (``.npz`` or ``.pkl``).

    Args:
      path: model file.
      gender: recorded in the result.
    Returns:
      :class:`BodyModelArrays`.
    Raises:
      FileNotFoundError / BodyModelFileError: missing or malformed file, naming the expected layout.
    """
    p = pathlib.Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"body model file {p} does not exist.\n{LAYOUT_HELP}")
    with open(p, "rb") as fh:
        magic = fh.read(4)
    if magic.startswith(b"PK"):
        data = read_model_npz(p)
    elif magic[:1] == b"\x80" or p.suffix.lower() == ".pkl":
        data = read_model_pickle(p)
    else:
        raise BodyModelFileError(f"{p}: neither an .npz archive nor a pickle (first bytes {magic!r}).\n{LAYOUT_HELP}")
    return validate_model_dict(data, str(p), gender)
