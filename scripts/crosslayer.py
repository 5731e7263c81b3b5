#!/usr/bin/env python3
"""Layers that only make sense on top of their lower layers (rdpull issue 13, item 1).

Each image is a list of layers; each layer a list of tar entries in order. A sequential
apply (umoci, GNU tar, the OCI image spec's model) follows a lower layer's symlinks, keeps
the metadata of lower directories that a layer names only as parents, and links to
lower files. `scripts/make-crosslayer-images` turns these into images in the testbed
registry and records how umoci and containerd unpack them.

usage: crosslayer.py list | crosslayer.py layer IMAGE N OUT.tar
"""
import io
import sys
import tarfile

MTIME = 1700000000


def f(name, data=b"", mode=0o644, uid=0, gid=0, xattrs=None):
    return dict(name=name, type=tarfile.REGTYPE, data=data, mode=mode, uid=uid, gid=gid, xattrs=xattrs)


def d(name, mode=0o755, uid=0, gid=0, xattrs=None):
    return dict(name=name, type=tarfile.DIRTYPE, mode=mode, uid=uid, gid=gid, xattrs=xattrs)


def sym(name, target):
    return dict(name=name, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def link(name, target):
    return dict(name=name, type=tarfile.LNKTYPE, linkname=target, mode=0o644)


def wh(parent, name):
    return f(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0)


def opq(parent):
    return f(f"{parent}/.wh..wh..opq", mode=0)


MERGED_USR = [
    d("usr"), d("usr/bin"), d("usr/lib"), d("usr/share"), d("etc"),
    f("usr/bin/old", b"old tool\n", 0o755), f("usr/bin/keep", b"kept tool\n", 0o755),
    f("usr/lib/libold.so", b"lib\n"),
    sym("bin", "usr/bin"),           # relative, as Debian's merged /usr
    sym("lib", "/usr/lib"),          # absolute: resolves inside the rootfs
    sym("share", "chain"),           # a chain: share -> chain -> usr/share
    sym("chain", "./usr/../usr/share"),
    sym("sbin", "usr/sbin"),         # dangling: usr/sbin does not exist
    sym("etc/alt", "../usr/lib"),    # relative from inside a directory
    sym("up", "../../../usr"),       # climbs above the root: clamped there
]

IMAGES = {
    # Layers that write through symlinks of a lower layer.
    "symlinks": [
        MERGED_USR,
        [
            f("bin/new", b"new tool, written through bin -> usr/bin\n", 0o755),
            wh("bin", "old"),                               # deletes usr/bin/old
            f("lib/x/y", b"through an absolute symlink\n"),  # usr/lib/x is new
            f("share/doc/readme", b"through a chain of symlinks\n"),
            f("sbin/tool", b"through a dangling symlink\n", 0o755),
            f("etc/alt/alt.conf", b"through a nested relative symlink\n"),
            f("up/escaped", b"through a symlink that climbs above the root\n"),
            f("usr/bin/explicit", b"named directly\n", 0o755),
        ],
        [
            f("bin/third", b"third layer, bin is still the lower symlink\n", 0o755),
            f("lib/x/y2", b"lib/x came from layer 2\n"),
        ],
    ],
    # Parents a layer names only implicitly keep the lower directory's metadata.
    "parents": [
        [
            d("opt", 0o750, 1000, 1001, {"user.note": b"opt of layer 1"}),
            d("opt/app", 0o700, 33, 33, {"user.owner": b"www-data"}),
            d("srv", 0o1777),
            d("srv/data", 0o2775, 0, 50),
            f("srv/data/old", b"old\n"),
        ],
        [
            f("opt/app/data/file", b"two implicit parents of layer 1, one new\n"),
            f("srv/data/new", b"setgid parent\n"),
            f("newdir/sub/f", b"no lower directory at all\n"),
        ],
        [
            f("opt/app/more", b"implicit again, over layer 1's directory\n"),
            f("opt/app/data/file2", b"implicit over layer 2's implicit directory\n"),
        ],
    ],
    # Hard links to files of lower layers.
    "hardlinks": [
        [
            d("data"), d("usr"), d("usr/bin"),
            f("data/a", b"content of a\n"),
            link("data/b", "data/a"),                        # a and b: one inode
            f("data/c", b"content of c, layer 1\n", 0o600, 7, 8, {"user.c": b"c"}),
            f("data/d", b"content of d, layer 1\n"),
            f("usr/bin/tool", b"tool\n", 0o4755),
            sym("bin", "usr/bin"),
        ],
        [
            link("link-a", "data/a"),                        # joins a and b
            link("link-c", "data/c"),                        # owner, mode, xattr of c
            link("link-a2", "link-a"),                       # to a link of this layer
            link("link-tool", "bin/tool"),                   # through a lower symlink
            link("link-d", "data/d"),
            f("data/d", b"content of d, replaced after link-d\n"),
        ],
    ],
    # A directory entry over a lower symlink replaces the symlink.
    "dir-over-symlink": [
        MERGED_USR,
        [d("bin", 0o700), f("bin/z", b"in a real bin directory\n")],
    ],
    # A hard link to nothing, in no layer: refused.
    "hardlink-missing": [
        [d("data"), f("data/a", b"a\n")],
        [link("link-nowhere", "data/nowhere")],
    ],
    # Whiteouts and opaque directories combined with lower symlinks.
    "whiteouts": [
        MERGED_USR + [
            d("dir"), f("dir/one", b"1\n"), d("dir/sub"), f("dir/sub/two", b"2\n"),
            sym("dirlink", "dir"),
            sym("gone", "dir"),
        ],
        [
            opq("bin"),                                      # empties usr/bin
            f("bin/only", b"only file of usr/bin\n", 0o755),
            wh("dirlink/sub", "two"),                        # deletes dir/sub/two
            wh("", "gone"),                                  # the symlink itself goes
            f("gone/new", b"gone is a real directory now\n"),
        ],
    ],
}


def layer(image, n, out):
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        for e in IMAGES[image][int(n) - 1]:
            ti = tarfile.TarInfo(e["name"])
            ti.type, ti.mode, ti.mtime = e["type"], e["mode"], MTIME
            ti.uid, ti.gid = e.get("uid", 0), e.get("gid", 0)
            ti.linkname = e.get("linkname", "")
            if e.get("xattrs"):
                ti.pax_headers = {
                    "SCHILY.xattr." + k: v.decode() for k, v in e["xattrs"].items()
                }
            data = e.get("data", b"")
            if ti.type == tarfile.REGTYPE:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)


if __name__ == "__main__":
    if sys.argv[1:2] == ["list"]:
        for name, layers in IMAGES.items():
            print(name, len(layers))
    elif len(sys.argv) == 5 and sys.argv[1] == "layer":
        layer(*sys.argv[2:])
    else:
        print(__doc__.strip())
        sys.exit(0 if sys.argv[1:2] in (["-h"], ["--help"]) else 2)
