"""Stand-in for ``djl_python.outputs.Output`` with the real method names and behaviour.

``send()`` is replaced by ``stream_bytes()``, which consumes the stream content the
way the real ``send()`` does: each item goes through the output formatter.

Like the real class, there is no per-item property method: a batch item's property
is an ordinary one named ``batch_{i}_<name>``, as DJL's own handlers set
``add_property(f"batch_{i}_Content-Type", ...)``.
"""
import json


def _default_stream_output_formatter(token_texts):
    if type(token_texts) is bytearray:
        return token_texts
    return bytearray((json.dumps({"outputs": token_texts}) + "\n").encode("utf-8"))


class Output:
    def __init__(self, code=200, message="OK"):
        self.code = code
        self.message = message
        self.properties = {}
        self.content = []
        self.stream_content = None
        self.stream_output_formatter = None

    def set_code(self, code: int):
        self.code = code
        return self

    def set_message(self, message: str):
        self.message = message
        return self

    def error(self, error: str, code=424, message="prediction failure"):
        self.code = code
        self.message = message
        self.add_property("content-type", "application/json")
        self.add_as_json({"code": self.code, "message": self.message, "error": error})
        return self

    def add_property(self, key, val):
        self.properties[key] = val
        return self

    def add(self, value, key=None, batch_index=None):
        if batch_index is not None:
            key = f"batch_{batch_index}.{'' if key is None else key}"
        if type(value) is str:
            value = value.encode("utf-8")
        elif type(value) not in (bytes, bytearray):
            value = self._encode_json(value)
        self.content.append((key, bytearray(value)))
        return self

    def add_as_json(self, val, key=None, batch_index=None):
        return self.add(self._encode_json(val), key=key, batch_index=batch_index)

    def add_stream_content(self, stream_content, output_formatter=_default_stream_output_formatter):
        self.stream_content = stream_content
        self.stream_output_formatter = output_formatter

    @staticmethod
    def _encode_json(val) -> bytearray:
        return bytearray(json.dumps(val, ensure_ascii=False, allow_nan=False, indent=2,
                                    separators=(",", ":")).encode("utf-8"))

    def stream_bytes(self) -> bytes:
        out = bytearray()
        for item in self.stream_content:
            out += self.stream_output_formatter(item)
        return bytes(out)
