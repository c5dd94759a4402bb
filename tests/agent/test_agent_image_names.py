"""A cache entry whose file name is not UTF-8 is left out of the inventory.

The control plane refuses any report that holds text which is not valid
Unicode (strict input), so one such name on disk would otherwise fail every
full heartbeat of the node; before strict input it was stored and broke
``pool list`` for everyone. The agent never writes such a name itself (names
come from URLs); this is a file put there by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from otherix.agent.images.entries import IMAGES_DIR, SIDECAR_SUFFIX, validate_basename
from otherix.agent.images.errors import ImageError
from otherix.agent.images.inventory import list_images


def put_entry(images: Path, name: bytes) -> None:
    data = b"image bytes"
    (images / os.fsdecode(name)).write_bytes(data)
    sidecar = images / os.fsdecode(name + SIDECAR_SUFFIX.encode())
    sidecar.write_text(hashlib.sha256(data).hexdigest())


def test_a_name_that_is_not_utf8_is_not_reported(tmp_path):
    images = tmp_path / IMAGES_DIR
    images.mkdir()
    put_entry(images, b"good.img")
    put_entry(images, b"caf\xe9.img")  # Latin-1, not UTF-8
    names = [i.name for i in list_images(tmp_path)]
    assert names == ["good.img"]
    # what is reported encodes as UTF-8 and as strict JSON
    json.dumps([i.to_wire() for i in list_images(tmp_path)], ensure_ascii=False).encode()


@pytest.mark.parametrize("name", ["caf\udce9.img", "\ud800.img"])
def test_validate_basename_refuses_names_that_are_not_text(name):
    with pytest.raises(ImageError):
        validate_basename(name)


def test_validate_basename_keeps_utf8_names():
    assert validate_basename("café.img") == "café.img"
