"""Exceptions raised by ctcodec."""


class CodecError(ValueError):
    """A file, tensor or request ctcodec cannot handle; the message names the file and tensor."""
