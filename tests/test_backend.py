"""The backend seam: devices, the default device (argument, setter, environment variable),
clear errors when a GPU is asked for and cannot be had, array movement and seeding."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import backend


@pytest.fixture
def clean_backend(monkeypatch):
    """Backend globals are restored after the test (monkeypatch undoes every setattr)."""
    for name in ("_default_device", "_cupy_module", "_cuda_device", "_seed"):
        monkeypatch.setattr(backend, name, getattr(backend, name))
    monkeypatch.setattr(backend, "_rngs", dict(backend._rngs))
    monkeypatch.delenv("MINITRANSFORMER_DEVICE", raising=False)
    backend.set_default_device(None)
    return backend


def _fake_cupy_without_gpu():
    def no_devices():
        return 0

    runtime = types.SimpleNamespace(getDeviceCount=no_devices)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))


# ---------------------------------------------------------------------------- devices
def test_cpu_device():
    dev = mt.Device("cpu")
    assert dev.type == "cpu" and dev.xp is np and str(dev) == "cpu"
    assert dev == "cpu" and dev == mt.Device(dev) and hash(dev) == hash(mt.Device("CPU "))
    assert backend.as_device("cpu") is backend.as_device("cpu")  # one object per device


def test_cuda_and_its_gpu_alias(device):
    if device != "cuda":
        pytest.skip("needs a GPU")
    assert mt.Device("gpu") == mt.Device("cuda") == "cuda"
    assert mt.Device("gpu").xp is backend.cupy()


def test_unknown_device_names_are_errors():
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        mt.Device("tpu")
    with pytest.raises(TypeError, match="device must be a string"):
        mt.Device(0)


def test_asking_for_cuda_without_cupy_says_what_is_missing(clean_backend):
    clean_backend._cupy_module = backend._CupyMissing("ModuleNotFoundError: No module 'cupy'")
    clean_backend._cuda_device = None
    assert not mt.cuda_available()
    for name in ("cuda", "gpu"):
        with pytest.raises(RuntimeError, match=r"CuPy is not installed.*pip install.*cuda12"):
            mt.Device(name)
    with pytest.raises(RuntimeError, match="CuPy is not available"):
        backend.cupy().zeros(3)  # the stand-in explains itself too
    assert not backend.cupy()


def test_asking_for_cuda_without_a_gpu_says_what_is_missing(clean_backend):
    clean_backend._cupy_module = _fake_cupy_without_gpu()
    clean_backend._cuda_device = None
    assert not mt.cuda_available()
    with pytest.raises(RuntimeError, match=r"CuPy is installed but no CUDA GPU is visible"):
        backend.as_device("cuda")


# ---------------------------------------------------------------------------- default device
def test_default_device_is_cpu_and_can_be_set(clean_backend):
    assert mt.get_default_device() == "cpu"
    mt.set_default_device("cpu")
    assert mt.zeros(2).device == "cpu"
    assert mt.tensor([1.0]).device == "cpu"


def test_default_device_from_the_environment(clean_backend, monkeypatch):
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "cpu")
    mt.set_default_device(None)  # forget the cached choice: read the variable again
    assert mt.get_default_device() == "cpu"
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "tpu")
    mt.set_default_device(None)
    with pytest.raises(ValueError, match="MINITRANSFORMER_DEVICE='tpu'"):
        mt.get_default_device()


def test_environment_asking_for_a_missing_gpu_is_a_clear_error(clean_backend, monkeypatch):
    clean_backend._cupy_module = backend._CupyMissing("ModuleNotFoundError: No module 'cupy'")
    clean_backend._cuda_device = None
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "gpu")
    mt.set_default_device(None)
    with pytest.raises(RuntimeError, match="MINITRANSFORMER_DEVICE='gpu'.*CuPy is not installed"):
        mt.zeros(2)


# ---------------------------------------------------------------------------- arrays
def test_get_array_module_and_movement(device, xp, rng):
    a = rng.standard_normal(3)
    on_device = backend.to_device(a, device)
    assert backend.get_array_module(on_device) is xp
    assert backend.get_array_module(a, on_device) is xp  # any GPU array makes it CuPy
    assert backend.get_array_module() is np
    assert backend.device_of(on_device) == device
    back = backend.to_numpy(on_device)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a)


def test_to_numpy_on_cpu_does_not_copy():
    a = np.ones(3)
    assert backend.to_numpy(a) is a
    assert backend.to_device(a, "cpu") is a


def test_erf_matches_math_erf(device, xp):
    values = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])
    got = backend.to_numpy(backend.erf(xp.asarray(values)))
    np.testing.assert_allclose(got, [math.erf(v) for v in values], rtol=1e-14, atol=1e-16)


def test_scatter_add_accumulates_repeated_indices(device, xp):
    a = xp.zeros(4)
    backend.scatter_add(a, xp.asarray([0, 2, 0, 0]), xp.asarray([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(backend.to_numpy(a), [8.0, 0.0, 2.0, 0.0])


# ---------------------------------------------------------------------------- seeding
def test_manual_seed_makes_the_default_generators_repeat(clean_backend, device):
    mt.manual_seed(123)
    first = backend.to_numpy(backend.default_rng(device).standard_normal(4))
    mt.manual_seed(123)
    gen = backend.default_rng(device)
    assert gen is backend.default_rng(device)  # one generator per device until reseeded
    second = backend.to_numpy(gen.standard_normal(4))
    np.testing.assert_array_equal(first, second)
    mt.manual_seed(124)
    third = backend.to_numpy(backend.default_rng(device).standard_normal(4))
    assert not np.array_equal(first, third)


def test_default_rng_is_the_devices_own(clean_backend, device, xp):
    gen = backend.default_rng(device)
    assert isinstance(gen, xp.random.Generator)


def test_keep_freed_memory_reports_whether_it_applied():
    """True exactly where the C library is glibc (CI's Linux), False elsewhere."""
    import platform

    is_glibc = platform.libc_ver()[0] == "glibc"
    assert mt.backend.keep_freed_memory() is is_glibc
    assert mt.backend.keep_freed_memory() is is_glibc  # calling it again is harmless


# ---------------------------------------------------------------------------- CuPy stand-in
def test_the_cupy_standin_is_used_only_when_asked(clean_backend, monkeypatch):
    """MINITRANSFORMER_CUPY_STANDIN names a test module used in place of a missing CuPy."""
    missing = backend._CupyMissing("ModuleNotFoundError: No module named 'cupy'")
    monkeypatch.setattr(backend, "_import_real_cupy", lambda: missing)
    monkeypatch.delenv(backend.STANDIN_VARIABLE, raising=False)
    clean_backend._cupy_module = None
    assert backend.cupy() is missing and not mt.cuda_available()
    monkeypatch.setenv(backend.STANDIN_VARIABLE, "tests.cupy_standin")
    clean_backend._cupy_module = None
    clean_backend._cuda_device = None
    from tests import cupy_standin

    assert backend.cupy() is cupy_standin and mt.cuda_available()
    x = mt.tensor([1.0, 2.0], device="cuda")
    assert type(x.data) is cupy_standin.ndarray and x.device == "cuda"
    assert backend.to_numpy(backend.erf(x.data)).shape == (2,)


def test_a_real_gpu_wins_over_the_standin_with_a_warning(clean_backend, monkeypatch):
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2)
    real = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime), __version__="13.6")
    monkeypatch.setattr(backend, "_import_real_cupy", lambda: real)
    monkeypatch.setenv(backend.STANDIN_VARIABLE, "tests.cupy_standin")
    clean_backend._cupy_module = None
    with pytest.warns(RuntimeWarning, match=r"MINITRANSFORMER_CUPY_STANDIN='tests\.cupy_standin' "
                                            r"is ignored: a real CuPy 13\.6 imports and sees 2"):
        assert backend.cupy() is real


@pytest.mark.parametrize(("name", "msg"), [
    ("tests.no_such_standin", r"the CuPy stand-in module does not import \(ModuleNotFoundError"),
    ("json", r"module 'json' is not a CuPy stand-in"),
])
def test_a_bad_standin_name_is_a_clear_error(clean_backend, monkeypatch, name, msg):
    monkeypatch.setattr(backend, "_import_real_cupy",
                        lambda: backend._CupyMissing("ModuleNotFoundError: no cupy"))
    monkeypatch.setenv(backend.STANDIN_VARIABLE, name)
    clean_backend._cupy_module = None
    with pytest.raises(ImportError, match=rf"^MINITRANSFORMER_CUPY_STANDIN='{name}': {msg}"):
        backend.cupy()
