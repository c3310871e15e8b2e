"""``semcorr bag-eval``: replay a rosbag2 into the correspondence node (or run the engine offline on its frames)
and score the outputs against the bag's ground truth. See ``docs/bag_eval.md``.

Modules: :mod:`.bag` (reading and checking bags), :mod:`.replay` (node mode: DDS replay, node process, recording),
:mod:`.offline` (engine directly), :mod:`.metrics` (PCK, 3D, pose, latency), :mod:`.plots` (pictures).
"""
