"""Reference authoring: the work behind ``semcorr reference ...`` (docs/references.md).

- :mod:`.document`: read and update a reference YAML that may not have keypoints yet;
- :mod:`.capture`: a reference (colour, aligned depth, intrinsics) from one frame of a rosbag2;
- :mod:`.editor`: the matplotlib keypoint editor (click, drag, name, delete, undo, save);
- :mod:`.propose`: keypoints of a new view proposed by the engine from a view already annotated;
- :mod:`.sheet`: the contact sheet of a reference, set or objects file.
"""
