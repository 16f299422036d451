"""UTF-8 decoding whose errors read exactly like Rust's.

A dead-letter reason should not depend on the language a plugin is written
in: ``str(Utf8Error)`` is the text of Rust's ``std::str::Utf8Error``
("invalid utf-8 sequence of 1 bytes from index 0"). Python's decoder marks
the same maximal invalid subsequence as Rust's, so only the wording needs
translating.
"""


class Utf8Error(ValueError):
    """Bytes that are not UTF-8.

    ``valid_up_to`` is the length of the valid prefix; ``error_len`` is the
    length of the invalid sequence after it, or ``None`` when the bytes end
    in the middle of a character.
    """

    def __init__(self, valid_up_to: int, error_len: int | None):
        super().__init__(valid_up_to, error_len)
        self.valid_up_to = valid_up_to
        self.error_len = error_len

    def __str__(self) -> str:
        if self.error_len is None:
            return f"incomplete utf-8 byte sequence from index {self.valid_up_to}"
        return f"invalid utf-8 sequence of {self.error_len} bytes from index {self.valid_up_to}"


def decode_utf8(data: bytes) -> str:
    """``data`` as text; raises ``Utf8Error`` when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        incomplete = error.reason == "unexpected end of data"
        raise Utf8Error(error.start, None if incomplete else error.end - error.start) from None
