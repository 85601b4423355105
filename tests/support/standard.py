"""The standard set of test images, built once per process and pushed once per registry.

Why a fixed set: most tests need "an image" with known properties, and sharing one set keeps
the suite fast (about 1.5 MB in all; busybox is most of it). Every image is pushed as
``REGISTRY_HOST/NAME:latest`` (the repository is the name):

- ``base``: OCI, 3 gzip layers: busybox (/bin/busybox, /bin/sh, /bin/cat, ...), some files
  (/etc/os-release, /usr/share/base/data.bin: 160 KB random), and /hello.txt =
  "hello from base\\n". Cmd: cat /hello.txt.
- ``app``: OCI, base's 3 layers plus 2 of its own (/app/data.bin 120 KB random,
  /app/config.json; then /hello.txt = "hello from app\\n", /app/VERSION). The seed scenario:
  most of app's layers are base's, so pulling app after base fetches only 2 layers + config.
- ``dockermedia``: Docker schema2 media types (manifest, config, gzip layers): busybox
  (the same blob as base's) + /hello.txt = "hello from dockermedia\\n" and 100 KB random.
- ``ocidata``: OCI with uncompressed layers (``application/vnd.oci.image.layer.v1.tar``):
  busybox + /hello.txt = "hello from ocidata\\n" and 100 KB random.
- ``multi``: an OCI index of linux/amd64, linux/arm64/v8, linux/arm/v7; each child is a
  distinct image with /platform.txt naming its platform; only amd64 has busybox (runnable here).
- ``multidocker``: the same three platforms as a Docker manifest list (Docker media types).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from .images import Image, Index, busybox_layer, layer, push, random_bytes

NAMES = ("base", "app", "dockermedia", "ocidata", "multi", "multidocker")
TAG = "latest"
PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7")


@dataclass(frozen=True)
class Pushed:
    """One standard image as it sits on one registry."""

    name: str
    ref: str  # "127.0.0.1:PORT/base:latest"
    repository: str
    tag: str
    digest: str  # of the top-level manifest or index
    obj: Image | Index


class StandardImages:
    """The six images (attributes and ``images["base"]``); ``push(registry)`` is idempotent."""

    def __init__(self) -> None:
        bb = busybox_layer()
        cat_hello = ("/bin/cat", "/hello.txt")
        base_files = layer(
            {
                "etc/os-release": 'ID=cas-test\nPRETTY_NAME="cas test base"\n',
                "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
                "etc/group": "root:x:0:\n",
                "usr/share/base/data.bin": random_bytes(160_000, seed=1),
            },
            comment="base files",
        )
        base_hello = layer({"hello.txt": "hello from base\n"}, comment="base hello")
        self.base = Image([bb, base_files, base_hello], cmd=cat_hello, labels={"name": "base"})
        self.app = Image(
            self.base.layers
            + [
                layer(
                    {"app/data.bin": random_bytes(120_000, seed=2), "app/config.json": '{"app": true}\n'},
                    comment="app data",
                ),
                layer({"hello.txt": "hello from app\n", "app/VERSION": "1.0\n"}, comment="app hello"),
            ],
            cmd=cat_hello,
            labels={"name": "app"},
        )
        self.dockermedia = Image(
            [
                bb,
                layer(
                    {
                        "hello.txt": "hello from dockermedia\n",
                        "data/random.bin": random_bytes(100_000, seed=3),
                    },
                    comment="dockermedia files",
                ),
            ],
            media="docker",
            cmd=cat_hello,
            labels={"name": "dockermedia"},
        )
        self.ocidata = Image(
            [
                busybox_layer("none"),
                layer(
                    {
                        "hello.txt": "hello from ocidata\n",
                        "data/random.bin": random_bytes(100_000, seed=4),
                    },
                    compression="none",
                    comment="ocidata files",
                ),
            ],
            cmd=cat_hello,
            labels={"name": "ocidata"},
        )
        self.multi = Index([self._platform_image(p, "oci") for p in PLATFORMS])
        self.multidocker = Index([self._platform_image(p, "docker") for p in PLATFORMS])
        self._pushed: dict[str, dict[str, Pushed]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _platform_image(platform: str, media: str) -> Image:
        os_, arch, *variant = platform.split("/")
        seed = PLATFORMS.index(platform) + 10
        files = {
            "platform.txt": platform + "\n",
            "hello.txt": f"hello from multi {platform}\n",
            "data.bin": random_bytes(50_000, seed=seed),
        }
        layers = [layer(files, comment=f"multi {platform}")]
        if platform == "linux/amd64":
            layers.insert(0, busybox_layer())
        return Image(
            layers,
            media=media,
            os=os_,
            architecture=arch,
            variant=variant[0] if variant else None,
            cmd=("/bin/cat", "/platform.txt"),
            labels={"name": "multi", "platform": platform},
        )

    def __getitem__(self, name: str) -> Image | Index:
        if name not in NAMES:
            raise KeyError(f"no standard image {name!r}; the names are {NAMES}")
        return getattr(self, name)

    def push(self, registry) -> dict[str, Pushed]:
        """Push all six to ``registry`` (once per registry host); returns name -> Pushed."""
        with self._lock:
            if registry.host not in self._pushed:
                self._pushed[registry.host] = {
                    name: Pushed(
                        name,
                        f"{registry.host}/{name}:{TAG}",
                        name,
                        TAG,
                        push(registry, name, TAG, self[name]),
                        self[name],
                    )
                    for name in NAMES
                }
            return self._pushed[registry.host]

    def ref(self, registry, name: str) -> str:
        """``HOST/NAME:latest`` on ``registry``, pushing the set there first if needed."""
        return self.push(registry)[name].ref


@functools.cache
def standard_images() -> StandardImages:
    """The one StandardImages of this process."""
    return StandardImages()
