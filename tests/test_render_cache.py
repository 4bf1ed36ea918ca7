"""The Jinja bytecode cache is code that rendering runs: used only from a directory of this user's own."""

from __future__ import annotations

import os

import jinja2

from launcher.render.manifests import _bytecode_cache


def cache_dir(tmp_path):
    return tmp_path / "llmlaunch" / "jinja"


def test_a_new_cache_directory_is_private_and_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert isinstance(_bytecode_cache(), jinja2.FileSystemBytecodeCache)
    assert cache_dir(tmp_path).stat().st_mode & 0o077 == 0


def test_a_cache_others_may_write_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_dir(tmp_path).mkdir(parents=True)
    for mode, parent_mode in ((0o777, 0o700), (0o770, 0o700), (0o700, 0o777)):
        cache_dir(tmp_path).chmod(mode)
        cache_dir(tmp_path).parent.chmod(parent_mode)
        assert _bytecode_cache() is None, (oct(mode), oct(parent_mode))


def test_a_cache_owned_by_someone_else_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache_dir(tmp_path).mkdir(parents=True, mode=0o700)
    cache_dir(tmp_path).parent.chmod(0o700)
    assert _bytecode_cache() is not None
    other = os.getuid() + 1  # the tests run as root on CI, which may hand a directory to another user
    if os.getuid() == 0:
        os.chown(cache_dir(tmp_path), other, other)
    else:  # an unprivileged user cannot give a directory away; a link to someone else's stands in
        cache_dir(tmp_path).rmdir()
        cache_dir(tmp_path).symlink_to("/")
    assert _bytecode_cache() is None
