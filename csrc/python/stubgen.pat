# nanobind stubgen patterns for fwassist._core (csrc/python/CMakeLists.txt).
# ArtifactFailure (and ReleaseFailure, bind_release.cpp) are made with PyErr_NewExceptionWithDoc (bind_artifact.cpp), whose __module__
# "fwassist._core" stubgen does not list: declared here. Internal: the wrappers translate it
# into fwassist.ArtifactError.
_core.__suffix__:
    class ArtifactFailure(ValueError):
        """An artifact failed to open or verify: args are (status name, message)."""

    class ReleaseFailure(ValueError):
        """A signed release failed to verify: args are (status name, message)."""
