"""Stand-in for ``djl_python.outputs.Output`` with the real method names, encodings and behaviour.

``content`` is a :class:`~djl_python.pair_list.PairList`, as in the real class. ``send()``
writes the real wire format to anything with ``sendall``. One addition for tests,
``stream_bytes()``, returns what ``send()`` streams after its header: each item of the
stream content through the output formatter.

Like the real class, there is no per-item property method: a batch item's property is
an ordinary one named ``batch_{i}_<name>``, as DJL's own handlers set
``add_property(f"batch_{i}_Content-Type", ...)``.
"""
import json
import logging
import struct

from .pair_list import PairList


def _default_stream_output_formatter(token_texts):
    token_texts = {"outputs": token_texts}
    return bytearray((json.dumps(token_texts) + "\n").encode("utf-8"))


class Output:
    def __init__(self, code=200, message="OK"):
        self.code = code
        self.message = message
        self.properties = dict()
        self.content = PairList()
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
        body = {"code": self.code, "message": self.message, "error": error}
        self.add_property("content-type", "application/json")
        self.add_as_json(body)
        return self

    def add_property(self, key, val):
        self.properties[key] = val
        return self

    def add(self, value, key=None, batch_index=None):
        if key is not None and type(key) is not str:
            logging.warning(f"Output key should be str type, got {type(key)}")
            key = str(key)
        if batch_index is not None:
            key = "" if key is None else key
            key = f"batch_{batch_index}.{key}"
        if type(value) is str:
            self.content.add(key=key, value=value.encode("utf-8"))
        elif type(value) is bytearray:
            self.content.add(key=key, value=value)
        elif type(value) is bytes:
            self.content.add(key=key, value=bytearray(value))
        else:
            self.content.add(key=key, value=self._encode_json(value))
        return self

    def add_as_json(self, val, key=None, batch_index=None):
        return self.add(self._encode_json(val), key=key, batch_index=batch_index)

    def add_stream_content(self, stream_content, output_formatter=_default_stream_output_formatter):
        self.stream_content = stream_content
        self.stream_output_formatter = output_formatter
        return self

    @staticmethod
    def _encode_json(val) -> bytearray:
        return bytearray(json.dumps(val, ensure_ascii=False, allow_nan=False, indent=2,
                                    separators=(",", ":")).encode("utf-8"))

    @staticmethod
    def binary_encode(data: dict) -> bytes:
        msg = bytearray()
        msg += struct.pack(">h", len(data))
        for k, v in data.items():
            Output.write_utf8(msg, k)
            Output.write_utf8(msg, str(v))
        return msg

    @staticmethod
    def write_utf8(msg, val):
        if val is None:
            msg += struct.pack(">i", -1)
        else:
            buf = val.encode("utf-8")
            msg += struct.pack(">i", len(buf))
            msg += buf

    def send(self, cl_socket):
        msg = bytearray()
        msg += struct.pack(">h", self.code)
        self.write_utf8(msg, self.message)
        msg += struct.pack(">h", len(self.properties))
        for k, v in self.properties.items():
            self.write_utf8(msg, k)
            self.write_utf8(msg, v)
        if self.stream_content is None:
            size = self.content.size()
            msg += struct.pack(">h", size)
            for i in range(size):
                self.write_utf8(msg, self.content.key_at(i))
                v = self.content.value_at(i)
                msg += struct.pack(">i", len(v))
                msg += v
            cl_socket.sendall(msg)
            return
        msg += struct.pack(">h", -1)
        cl_socket.sendall(msg)
        while True:
            try:
                data = next(self.stream_content)
                if self.stream_output_formatter is not None:
                    data = self.stream_output_formatter(data)
                msg = bytearray(b"\1")
                if type(data) is str:
                    data = data.encode("utf-8")
                elif type(data) is bytes:
                    data = bytearray(data)
                elif type(data) is not bytearray:
                    data = bytearray(self._encode_json(data))
                msg += struct.pack(">i", len(data))
                msg += data
                cl_socket.sendall(msg)
            except StopIteration:
                cl_socket.sendall(bytearray(b"\0") + struct.pack(">i", 0))
                break
            except Exception as e:
                logging.exception("Failed read streaming content from output")
                data = str(e).encode("utf-8")
                cl_socket.sendall(bytearray(b"\0") + struct.pack(">i", len(data)) + data)
                break

    def stream_bytes(self) -> bytes:
        out = bytearray()
        for item in self.stream_content:
            out += self.stream_output_formatter(item)
        return bytes(out)
