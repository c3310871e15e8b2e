"""The keypoint editor: a matplotlib figure over a reference image.

Mouse: left click on empty image places a keypoint (named by the next name of ``pending`` names, else
``kp_<n>``); left press on a keypoint selects it and dragging moves it; right click deletes the keypoint
under the cursor. Keys (shown in the figure): ``n`` rename the selected keypoint (type, Enter, Escape
cancels), ``d``/Delete delete the selected one, ``u``/ctrl+z undo, ``s`` save, ``q`` quit. A keypoint
placed, moved or renamed by hand loses its proposal score; the others keep their score's colour.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np

from semcorr_ros.authoring.document import Draft, save_draft

HELP = ("click: place | drag: move | right click / d: delete | n: name (type, Enter) | u: undo | "
        "s: save | q: quit")
#: pick radius in screen pixels
PICK_PX = 10.0


class KeypointEditor:
    """Edit ``draft.keypoints`` on ``fig`` (one axes). ``on_save`` is called with the saved path."""

    def __init__(self, fig, draft: Draft, *, pending: Sequence[str] = (), threshold: float = 0.5,
                 on_save: Callable | None = None) -> None:
        self.fig, self.draft, self.threshold, self.on_save = fig, draft, threshold, on_save
        self.pending = [n for n in pending if n not in draft.keypoints]
        self.ax = fig.add_axes((0.0, 0.06, 1.0, 0.90))
        self.ax.imshow(draft.image)
        self.ax.set_axis_off()
        self.help = fig.text(0.01, 0.015, HELP, fontsize=8, family="monospace")
        self.status = fig.text(0.01, 0.97, "", fontsize=9)
        self.selected: str | None = None
        self.dragging = False
        self.typing: str | None = None
        self.history: list[tuple[dict, dict]] = []
        self.saved = False
        self._artists: list = []
        c = fig.canvas
        self._cids = [c.mpl_connect("button_press_event", self._press),
                      c.mpl_connect("motion_notify_event", self._motion),
                      c.mpl_connect("button_release_event", self._release),
                      c.mpl_connect("key_press_event", self._key)]
        self.redraw()

    # ---------------------------------------------------------------- state
    def _push(self) -> None:
        self.history.append((copy.deepcopy(self.draft.keypoints), dict(self.draft.scores)))
        self.history = self.history[-200:]

    def _next_name(self) -> str:
        if self.pending:
            return self.pending.pop(0)
        i = len(self.draft.keypoints)
        while f"kp_{i}" in self.draft.keypoints:
            i += 1
        return f"kp_{i}"

    def _hit(self, event) -> str | None:
        """The keypoint within :data:`PICK_PX` screen pixels of the event, nearest first."""
        if not self.draft.keypoints or event.x is None:
            return None
        names = self.draft.names
        screen = self.ax.transData.transform(self.draft.xy())
        d = np.hypot(screen[:, 0] - event.x, screen[:, 1] - event.y)
        i = int(np.argmin(d))
        return names[i] if d[i] <= PICK_PX else None

    def add(self, x: float, y: float, name: str | None = None) -> str:
        self._push()
        name = name or self._next_name()
        self.draft.keypoints[name] = [float(x), float(y)]
        self.draft.scores.pop(name, None)
        self.selected = name
        return name

    def move(self, name: str, x: float, y: float) -> None:
        self.draft.keypoints[name] = [float(x), float(y)]
        self.draft.scores.pop(name, None)

    def delete(self, name: str) -> None:
        self._push()
        self.draft.keypoints.pop(name, None)
        self.draft.scores.pop(name, None)
        self.selected = None if self.selected == name else self.selected

    def rename(self, old: str, new: str) -> bool:
        new = new.strip()
        if not new or new == old:
            return False
        if new in self.draft.keypoints:
            self.status.set_text(f"'{new}' exists already: not renamed")
            return False
        self._push()
        self.draft.keypoints = {(new if k == old else k): v for k, v in self.draft.keypoints.items()}
        self.draft.scores.pop(old, None)
        self.selected = new
        return True

    def undo(self) -> bool:
        if not self.history:
            return False
        self.draft.keypoints, self.draft.scores = self.history.pop()
        if self.selected not in self.draft.keypoints:
            self.selected = None
        return True

    def save(self):
        path = save_draft(self.draft, self.threshold)
        self.saved = True
        self.status.set_text(f"saved {len(self.draft.keypoints)} keypoints to {path.name}")
        if self.on_save:
            self.on_save(path)
        return path

    # ---------------------------------------------------------------- events
    def _press(self, event) -> None:
        if event.inaxes is not self.ax or self.typing is not None or event.xdata is None:
            return
        hit = self._hit(event)
        if event.button == 3:
            if hit:
                self.delete(hit)
        elif event.button == 1:
            if hit:
                self._push()
                self.selected, self.dragging = hit, True
            else:
                self.add(event.xdata, event.ydata)
        self.redraw()

    def _motion(self, event) -> None:
        if self.dragging and self.selected and event.inaxes is self.ax and event.xdata is not None:
            self.move(self.selected, event.xdata, event.ydata)
            self.redraw()

    def _release(self, event) -> None:
        if self.dragging and self.history and self.history[-1][0] == self.draft.keypoints:
            self.history.pop()  # a click on a keypoint without a move is no edit
        self.dragging = False

    def _key(self, event) -> None:
        key = event.key or ""
        if self.typing is not None:
            if key == "enter":
                if self.selected:
                    self.rename(self.selected, self.typing)
                self.typing = None
            elif key == "escape":
                self.typing = None
            elif key == "backspace":
                self.typing = self.typing[:-1]
            elif len(key) == 1:
                self.typing += key
            self.redraw()
            return
        if key == "n" and self.selected:
            self.typing = ""
        elif key in ("d", "delete") and self.selected:
            self.delete(self.selected)
        elif key in ("u", "ctrl+z"):
            self.undo()
        elif key == "s":
            self.save()
        elif key == "q":
            import matplotlib.pyplot as plt

            plt.close(self.fig)
            return
        self.redraw()

    # ---------------------------------------------------------------- drawing
    def colour(self, name: str):
        """Green for keypoints set by hand; proposals from red (score 0) to yellow (threshold) to green."""
        import matplotlib

        if name not in self.draft.scores:
            return (0.1, 0.9, 0.2)
        return matplotlib.colormaps["RdYlGn"](float(np.clip(self.draft.scores[name], 0, 1)))[:3]

    def redraw(self) -> None:
        for a in self._artists:
            a.remove()
        self._artists = []
        for name, (x, y) in self.draft.keypoints.items():
            sel = name == self.selected
            self._artists += self.ax.plot([x], [y], "o", ms=9 if sel else 7, mfc=self.colour(name),
                                          mec="white" if sel else "black", mew=2 if sel else 1)
            label = name + (f" {self.draft.scores[name]:.2f}" if name in self.draft.scores else "")
            if name in self.draft.scores and self.draft.scores[name] < self.threshold:
                label += " ?"
            self._artists.append(self.ax.annotate(label, (x, y), xytext=(6, 6), textcoords="offset points",
                                                  fontsize=8, color="white",
                                                  bbox={"fc": "black", "alpha": 0.6, "pad": 1, "lw": 0}))
        if self.typing is not None:
            self.status.set_text(f"name for '{self.selected}': {self.typing}_  (Enter: ok, Escape: cancel)")
        elif not self.saved or self.history:
            unsure = [n for n, s in self.draft.scores.items() if s < self.threshold]
            self.status.set_text(f"{self.draft.path.name}: {len(self.draft.keypoints)} keypoints"
                                 + (f"; uncertain: {', '.join(unsure)}" if unsure else "")
                                 + (f"; next name: {self.pending[0]}" if self.pending else ""))
        self.fig.canvas.draw_idle()


def open_editor(draft: Draft, *, pending: Sequence[str] = (), threshold: float = 0.5, show: bool = True):
    """A figure sized to the image with a :class:`KeypointEditor`; ``show`` blocks until the window closes."""
    import matplotlib.pyplot as plt

    for k in ("keymap.save", "keymap.quit", "keymap.fullscreen", "keymap.home", "keymap.back", "keymap.zoom",
              "keymap.pan", "keymap.grid", "keymap.yscale", "keymap.xscale"):
        plt.rcParams[k] = []  # the editor's keys, not matplotlib's defaults
    h, w = draft.image.shape[:2]
    scale = 10.0 / max(w, h)
    fig = plt.figure(figsize=(w * scale, h * scale / 0.90))
    editor = KeypointEditor(fig, draft, pending=pending, threshold=threshold)
    if show:
        plt.show()
    return editor
