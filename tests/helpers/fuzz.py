"""What every fuzz test of a file reader shares: mutation strategies, hostile files, the check.

A reader passes an input when it returns normally or raises ITS OWN error type with a message
naming the file; anything else fails the test: another exception type, a hang (more than
``TIME_LIMIT_S`` per input, by SIGALRM and hypothesis' deadline), more memory than
``memory_cap(input size)`` (tracemalloc peak, which counts NumPy's buffers; an address-space
ceiling turns a runaway allocation into a reported MemoryError), or a file
written / changed / removed in the input's folder.

Profiles (``HYPOTHESIS_PROFILE``): ``quick`` (the default suite: a few dozen derandomized
examples per reader) and ``fuzz`` (``make fuzz``: ``FUZZ_EXAMPLES`` per reader, default 2000,
random). Outcomes per reader are counted in :data:`OUTCOMES` and printed at the end of a
module (run with ``-s`` to see them); ``FUZZ_REPORT=path.json`` also writes them there.
"""
from __future__ import annotations

import collections
import contextlib
import datetime
import io
import json
import os
import pathlib
import pickle
import re
import resource
import shutil
import signal
import struct
import tempfile
import traceback
import tracemalloc

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

TIME_LIMIT_S = 20
QUICK_EXAMPLES = 25

settings.register_profile(
    "quick", max_examples=QUICK_EXAMPLES, deadline=datetime.timedelta(seconds=TIME_LIMIT_S),
    derandomize=True, database=None, print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("FUZZ_EXAMPLES", "2000")),
    deadline=datetime.timedelta(seconds=TIME_LIMIT_S), database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "quick")
settings.load_profile(PROFILE)

#: reader -> Counter of outcomes ("ok", or the error type raised)
OUTCOMES: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


def examples(quick: int = QUICK_EXAMPLES):
    """``@settings`` for one reader's fuzz test: ``quick`` examples in the default suite."""
    if PROFILE == "quick":
        return settings(max_examples=quick)
    return settings()


class Hang(Exception):
    """The reader ran past the per-input time limit."""


def _alarm(signum, frame):
    raise Hang(f"the reader ran more than {TIME_LIMIT_S} s on one input")


def _snapshot(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def memory_cap(input_bytes: int) -> int:
    """The most memory a reader may allocate for an input of this size (bytes)."""
    return 64 * (1 << 20) + 40 * int(input_bytes)


def check_reader(name: str, read, path: pathlib.Path, errors, *, names_file: bool = True,
                 cap: int | None = None):
    """Run ``read(path)``; assert it returns or raises one of ``errors`` naming the file.

    Returns the outcome (``"ok"`` or the error type's name).
    """
    path = pathlib.Path(path)
    folder = path.parent
    before = _snapshot(folder)
    size = path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    cap = memory_cap(size) if cap is None else cap
    previous = signal.signal(signal.SIGALRM, _alarm)
    # An address-space ceiling for the read, so that a blow-up becomes a MemoryError (reported
    # below) instead of the kernel's OOM killer taking the whole run (and the shared machine).
    # Libraries that start thread pools on first use must be warmed up before (thread stacks
    # count against the ceiling).
    limits = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    ceiling = vm + max(4 * cap, 1 << 30)
    if limits[1] == resource.RLIM_INFINITY or ceiling < limits[1]:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, limits[1]))
    tracemalloc.start()
    outcome = "ok"
    error = None
    try:
        signal.alarm(TIME_LIMIT_S)
        try:
            read(path)
        finally:
            signal.alarm(0)
    except errors as e:
        outcome = type(e).__name__
        error = e
    except Hang as e:
        raise AssertionError(f"{name}: {e} ({path}, {size} bytes)") from None
    except BaseException as e:  # noqa: BLE001 - the point: nothing else may escape
        if isinstance(e, KeyboardInterrupt):
            raise
        raise AssertionError(f"{name}: {type(e).__name__} escaped instead of {errors}: {e}\n"
                             + "".join(traceback.format_exception(e))[-3000:]) from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, previous)
    if peak > cap and os.environ.get("FUZZ_SAVE_FAILURES"):
        shutil.copy(path, os.environ["FUZZ_SAVE_FAILURES"])
    assert peak <= cap, f"{name}: allocated {peak} bytes for a {size}-byte input (cap {cap})"
    after = _snapshot(folder)
    assert after == before, f"{name}: files changed in {folder}: {set(after) ^ set(before) or 'contents'}"
    if error is not None:
        message = str(error)
        assert message.strip(), f"{name}: {type(error).__name__} with an empty message"
        if names_file:
            assert path.name in message, f"{name}: the message does not name {path.name}: {message[:500]}"
    OUTCOMES[name][outcome] += 1
    return outcome


def report(module_name: str) -> None:
    """Print (and with FUZZ_REPORT, merge into that JSON file) the outcome counts so far."""
    if not OUTCOMES:
        return
    lines = [f"fuzz outcomes ({module_name}, profile {PROFILE}):"]
    for name, counts in sorted(OUTCOMES.items()):
        total = sum(counts.values())
        parts = ", ".join(f"{k} {v}" for k, v in counts.most_common())
        lines.append(f"  {name:28s} {total:6d} inputs, 0 failures: {parts}")
    print("\n" + "\n".join(lines))
    out = os.environ.get("FUZZ_REPORT")
    if out:
        data = json.loads(pathlib.Path(out).read_text()) if os.path.exists(out) else {}
        for name, counts in OUTCOMES.items():
            data[name] = dict(counts)
        pathlib.Path(out).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- byte mutations
_MAGIC = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
          b"\xff" * 8, b"\x7f\xff\xff\xff\xff\xff\xff\xff", b"\x01\x00\x00\x00"]
_NUMBERS = [b"0", b"-1", b"4294967296", b"1000000000000", b"99999999999999999999999", b"nan", b"1e308", b"-7"]


@st.composite
def mutated(draw, seed: bytes, head: int = 512):
    """``seed`` with 1-4 of: truncation, bit flips, overwritten / inserted / deleted bytes,
    boundary integers, a decimal number replaced (for text headers), a chunk repeated."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        near = draw(st.booleans())
        pos = draw(st.integers(0, max(min(n, head) if near else n, 0)))
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "magic", "number",
                                     "repeat"]))
        if kind == "truncate":
            data = data[:pos]
        elif kind == "flip" and n:
            i = min(pos, n - 1)
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite" and n:
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif kind == "magic":
            chunk = draw(st.sampled_from(_MAGIC))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "number":
            numbers = list(re.finditer(rb"-?\d+", bytes(data[:4096])))
            if numbers:
                m = draw(st.sampled_from(numbers))
                data[m.start():m.end()] = draw(st.sampled_from(_NUMBERS))
        elif kind == "repeat" and n:
            chunk = bytes(data[pos:pos + draw(st.integers(1, 256))])
            data[pos:pos] = chunk * draw(st.integers(1, 8))
    return bytes(data)


# ----------------------------------------------------------------------------- value mutations
def npy_bytes(shape, dtype="<f4", data: bytes = b"", fortran: bool = False) -> bytes:
    """An ``.npy`` file whose header announces ``shape`` / ``dtype`` followed by ``data`` (a liar
    when ``data`` is shorter: the size-cap check must refuse it before allocating)."""
    header = repr({"descr": np.dtype(dtype).str if not isinstance(dtype, str) else dtype,
                   "fortran_order": fortran, "shape": tuple(shape)}).encode("latin1")
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


DTYPES = ["<f4", "<f8", "<f2", "<i4", "<i8", "<u1", "|b1", "<c8", "<U3", "|S4", "<m8[s]", "<M8[D]", "|V8"]


@st.composite
def wrong_arrays(draw, like: np.ndarray | None = None):
    """An array of another shape or dtype than ``like`` (or any small array)."""
    dtype = draw(st.sampled_from(DTYPES))
    if like is not None and draw(st.booleans()):
        shape = list(like.shape)
        if shape and draw(st.booleans()):
            i = draw(st.integers(0, len(shape) - 1))
            shape[i] = draw(st.sampled_from([0, 1, max(shape[i] - 1, 0), shape[i] + 1, 3]))
        elif draw(st.booleans()):
            shape = shape[:-1] if shape else [2]
        else:
            shape = shape + [2]
        dtype = like.dtype.str if draw(st.booleans()) else dtype
    else:
        shape = draw(st.lists(st.integers(0, 5), max_size=3))
    n = int(np.prod(shape)) if shape else 1
    dt = np.dtype(dtype)
    raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize)) if n * dt.itemsize < 4096 else \
        bytes(n * dt.itemsize)
    return np.frombuffer(raw, dt).reshape(shape) if shape else np.frombuffer(raw, dt)[0:1].reshape(())


def odd_values(like=None):
    """Values of the wrong type: arrays of other shapes / dtypes, scalars, strings, containers."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(),
                        st.text(max_size=8), st.binary(max_size=8))
    return st.one_of(wrong_arrays(like if isinstance(like, np.ndarray) else None), scalars,
                     st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=4), scalars, max_size=3),
                     st.tuples(scalars, scalars))


@st.composite
def mutated_mapping(draw, seed: dict, value_strategy=odd_values):
    """``seed`` with keys dropped, added, or values replaced (recursively into sub-dicts / lists)."""
    out = dict(seed)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "add", "replace", "replace", "nest"]))
        keys = list(out)
        if kind == "drop" and keys:
            out.pop(draw(st.sampled_from(keys)))
        elif kind == "add":
            out[draw(st.text(min_size=1, max_size=6))] = draw(value_strategy())
        elif kind in ("replace", "nest") and keys:
            key = draw(st.sampled_from(keys))
            value = out[key]
            if isinstance(value, dict) and value and draw(st.booleans()):
                out[key] = draw(mutated_mapping(value, value_strategy))
            elif isinstance(value, list) and value and draw(st.booleans()):
                value = list(value)
                i = draw(st.integers(0, len(value) - 1))
                value[i] = draw(value_strategy(value[i]))
                out[key] = value
            elif kind == "nest":
                out[key] = draw(st.sampled_from([[value], {"x": value}, (value, value)]))
            else:
                out[key] = draw(value_strategy(value))
    return out


def mutated_file(data, name: str, blob: bytes, values: dict, head: int = 512) -> bytes:
    """Draw either ``blob`` with byte mutations or ``values`` with value mutations saved again
    in the format of ``name`` (``.npz``: ``np.savez``; otherwise a pickle of a random protocol)."""
    if data.draw(st.booleans()):
        return data.draw(mutated(blob, head=head))
    changed = data.draw(mutated_mapping(values))
    if not name.endswith(".npz"):
        return pickle.dumps(changed, protocol=data.draw(st.integers(0, 5)))
    buf = io.BytesIO()
    try:
        np.savez(buf, **{str(k): np.asarray(v) for k, v in changed.items()})
    except (ValueError, TypeError):  # not storable as .npz (ragged values): the seed instead
        return blob
    return buf.getvalue()


# ----------------------------------------------------------------------------- hostile pickles
def pickle_bombs() -> dict[str, bytes]:
    """Small pickles that would allocate gigabytes or run code if their globals were trusted."""
    bombs = {}
    # numpy _reconstruct of a 10^12-element array
    bombs["reconstruct_huge"] = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01"
                                 b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85q\x02C\x01bq\x03\x87q\x04Rq\x05.")
    # ndarray((10^12,)) called directly
    bombs["ndarray_huge"] = b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85\x85R."
    # 40 nested hex encodings of one byte (2^40 bytes)
    bombs["codec_hex"] = b"\x80\x03" + _hex_bomb(40)
    # list(x) of one big list, 5000 times, all kept (quadratic)
    items = b"(" + b"K\x01" * 20000 + b"lq\x00"
    copies = b"(" + b"c__builtin__\nlist\nh\x00\x85R" * 5000 + b"l."
    bombs["list_copies"] = b"\x80\x02" + items + b"0" + copies
    bombs["runs_code"] = pickle.dumps(_Evil(), protocol=2)
    bombs["deep_nesting"] = b"\x80\x02" + b"]" * 100000 + b"."
    return bombs


def _hex_bomb(levels: int) -> bytes:
    out = b"C\x01a"
    for _ in range(levels):
        out = b"c_codecs\nencode\n" + out + b"U\x03hex\x86R"
    return out + b"."


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/hmr_jax_fuzz_pwned",))


@contextlib.contextmanager
def fresh_dir(base: pathlib.Path):
    """A new empty folder under ``base`` for one example, removed afterwards."""
    folder = pathlib.Path(tempfile.mkdtemp(dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Seeds(dict):
    """Seeds by name (a dict whose repr stays short in hypothesis' reports)."""

    def __repr__(self) -> str:
        return f"Seeds({sorted(self)})"


def write(folder: pathlib.Path, name: str, data: bytes) -> pathlib.Path:
    """``data`` to ``folder/name`` (the input of one example)."""
    path = folder / name
    path.write_bytes(data)
    return path


def to_bytes(obj, protocol: int = 2) -> bytes:
    """Pickle ``obj`` (the seed of a pickle reader)."""
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=protocol)
    return buf.getvalue()
