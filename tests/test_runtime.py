import numpy as np
import pytest
import torch

from facelab import runtime


def test_setup_quick_profile_picks_quick_sizes():
    P = runtime.setup("quick", "auto", 3, verbose=False, style=False)
    assert P.name == "quick" and P.quick and not P.full
    assert P.pick(quick=2_000, full=200_000) == 2_000
    assert P.seed == 3
    assert isinstance(P.device, torch.device)


def test_full_profile_picks_full_sizes_and_is_case_insensitive():
    P = runtime.setup(" Full ", "cpu", 0, verbose=False, style=False)
    assert P.pick(quick=1, full=2) == 2


@pytest.mark.parametrize("profile", ["fast", "", None, 3])
def test_unknown_profile_is_a_clear_error(profile):
    with pytest.raises(runtime.ProfileError, match="PROFILE"):
        runtime.setup(profile, "cpu", 0, verbose=False, style=False)


@pytest.mark.parametrize("device", ["tpu", "gpu", "", 0])
def test_unknown_device_is_a_clear_error(device):
    with pytest.raises(runtime.ProfileError, match="DEVICE"):
        runtime.resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_gpu_fails_instead_of_falling_back():
    with pytest.raises(runtime.ProfileError, match="no CUDA"):
        runtime.resolve_device("cuda")


def test_auto_resolves_to_an_available_device():
    dev = runtime.resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else dev.type
    assert dev.type == expected
    torch.zeros(1, device=dev)  # the device is usable


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(runtime.ProfileError, match="SEED"):
        runtime.seed_everything(seed)


def test_seed_everything_makes_numpy_and_torch_reproducible():
    a = runtime.setup("quick", "cpu", 7, verbose=False, style=False)
    x1, t1, g1 = a.rng.normal(size=4), torch.randn(4), np.random.rand(2)
    b = runtime.setup("quick", "cpu", 7, verbose=False, style=False)
    x2, t2, g2 = b.rng.normal(size=4), torch.randn(4), np.random.rand(2)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(g1, g2)
    assert torch.equal(t1, t2)
    c = runtime.setup("quick", "cpu", 8, verbose=False, style=False)
    assert not np.allclose(c.rng.normal(size=4), x1)


def test_profile_generator_streams_are_independent_and_reproducible():
    P = runtime.setup("quick", "cpu", 1, verbose=False, style=False)
    a = torch.rand(3, generator=P.generator(0))
    b = torch.rand(3, generator=P.generator(0))
    c = torch.rand(3, generator=P.generator(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_threads_follow_environment(monkeypatch):
    monkeypatch.setenv("FACELAB_THREADS", "1")
    assert runtime.set_threads() == 1
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("FACELAB_THREADS")
    assert runtime.set_threads(2) == 2
    monkeypatch.setenv("FACELAB_THREADS", "two")
    with pytest.raises(runtime.ProfileError, match="FACELAB_THREADS"):
        runtime.set_threads()


def test_default_threads_leave_one_core_free(monkeypatch):
    monkeypatch.delenv("FACELAB_THREADS", raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 8)
    assert runtime.default_threads() == 7
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 1)
    assert runtime.default_threads() == 1
