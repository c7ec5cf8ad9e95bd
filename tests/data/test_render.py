"""Choosing the OpenGL backend: keep the user's, else EGL, else OSMesa, else say what to install."""

import sys

import pytest

from shared.data import render


@pytest.fixture
def no_backend_chosen(monkeypatch):
    # setenv first: it records the variable's state (absent included), so the value configure_gl
    # writes is undone after the test; a bare delenv of an absent variable records nothing, and a
    # later test in the process would render with the fake probe's choice.
    for name in ("MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)  # restored after the test


def test_user_choice_is_kept(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setattr(render, "_probe", lambda backend: pytest.fail("must not probe"))
    assert render.configure_gl() == "osmesa"


def test_egl_first_then_osmesa(no_backend_chosen, monkeypatch):
    tried = []

    def probe(backend):
        tried.append(backend)
        return backend == "osmesa", "no EGL device"

    monkeypatch.setattr(render, "_probe", probe)
    assert render.configure_gl() == "osmesa"
    assert tried == ["egl", "osmesa"]
    import os

    assert os.environ["MUJOCO_GL"] == "osmesa" and os.environ["PYOPENGL_PLATFORM"] == "osmesa"


def test_no_backend_says_what_to_install(no_backend_chosen, monkeypatch):
    monkeypatch.setattr(render, "_probe", lambda backend: (False, f"{backend} library not found"))
    with pytest.raises(render.RenderSetupError) as error:
        render.configure_gl()
    message = str(error.value)
    assert "egl: egl library not found" in message and "osmesa: osmesa library not found" in message
    assert "apt-get install libegl1" in message and "libosmesa6" in message


def test_real_probe_of_this_machine():
    ok, message = render._probe("egl")
    if not ok:  # then the fallback must work, or no test here could render
        ok, message = render._probe("osmesa")
    assert ok, message
