"""Reference files: what the engine matches into live frames.

Three kinds of YAML file (the node's ``reference_file`` takes all three; ``semcorr bag-eval --reference`` and
``semcorr match`` a single view); the format in full is in docs/references.md and docs/node.md:

- a **single view** (:mod:`.single`): one image of an object with named keypoints, optionally depth and
  intrinsics;
- a **reference set** (:mod:`.sets`): several views of one object (``views:``), sharing keypoint names, each
  with the subset visible in it;
- an **objects** file (:mod:`.sets`): several objects (``objects:``), each a single view or a set.

:func:`load_objects` reads any of them into :class:`ObjectSpec` objects; :mod:`.writer` writes them.
Loading raises :class:`~semcorr_ros.errors.BadReferenceError` naming the file and the field -- never another
exception -- and the work a file can cause is bounded (keypoints, pixels, views, objects).
"""

from semcorr_ros.reference.sets import MAX_OBJECTS, MAX_VIEWS, ObjectSpec, load_objects
from semcorr_ros.reference.single import (
                                          MAX_KEYPOINTS,
                                          MAX_PIXELS,
                                          ReferenceSpec,
                                          load_keypoints,
                                          load_reference,
                                          parse_intrinsics,
                                          read_depth,
                                          read_image,
)
from semcorr_ros.reference.writer import write_objects, write_reference, write_reference_set

__all__ = ["MAX_KEYPOINTS", "MAX_OBJECTS", "MAX_PIXELS", "MAX_VIEWS", "ObjectSpec", "ReferenceSpec",
           "load_keypoints", "load_objects", "load_reference", "parse_intrinsics", "read_depth", "read_image",
           "write_objects", "write_reference", "write_reference_set"]
