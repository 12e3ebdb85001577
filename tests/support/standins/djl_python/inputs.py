"""Stand-in for ``djl_python.inputs.Input`` with the real method names and behaviour, and
``read(conn)``, which decodes an input in the real wire format from anything with ``recv``."""
import json
import struct

from .pair_list import PairList


def retrieve_buffer(conn, length):
    data = bytearray()
    while length > 0:
        pkt = conn.recv(length)
        if len(pkt) == 0:
            raise ValueError("Connection disconnected")
        data += pkt
        length -= len(pkt)
    return data


def retrieve_int(conn):
    return struct.unpack(">i", retrieve_buffer(conn, 4))[0]


def retrieve_short(conn):
    return struct.unpack(">h", retrieve_buffer(conn, 2))[0]


def retrieve_utf8(conn):
    length = retrieve_int(conn)
    if length < 0:
        return None
    return retrieve_buffer(conn, length).decode("utf8")


class Input:
    def __init__(self):
        self.function_name = None
        self.properties = {}
        self.content = PairList()

    def is_batch(self) -> bool:
        return "batch_size" in self.properties

    def get_batch_size(self) -> int:
        return int(self.properties.get("batch_size", "1"))

    def get_batches(self):
        # Keys look like batch_001.data (DJL's Java front end) or batch_001_data (test_model.py):
        # three digits of index, one separator, then the item's own key.
        if not self.is_batch():
            return [self]
        batch = [Input() for _ in range(self.get_batch_size())]
        for key, value in self.properties.items():
            if key.startswith("batch_") and key != "batch_size":
                batch[int(key[6:9])].properties[key[10:]] = value
        for i in range(self.content.size()):
            key = self.content.key_at(i)
            batch[int(key[6:9])].content.add(key[10:], self.content.value_at(i))
        return batch

    def get_function_name(self):
        return self.function_name

    def get_properties(self) -> dict:
        return self.properties

    def get_content(self):
        return self.content

    def get_property(self, key):
        return next((v for k, v in self.properties.items() if k.lower() == key.lower()), None)

    def contains_key(self, key) -> bool:
        return self.content.get(key) is not None

    def get_data(self, key=None):
        content_type = self.get_property("content-type")
        if content_type is not None and content_type.startswith("application/json"):
            return self.get_as_json(key)
        if content_type is not None and content_type.startswith("text/"):
            return self.get_as_string(key)
        if self.content.is_empty():
            return None
        return self.get_as_bytes(key=key)

    def get_as_bytes(self, key=None):
        if self.content.is_empty():
            return None
        if key:
            value = self.content.get(key)
            if value is None:
                raise KeyError(f"requested data for key:{key} is not found!")
            return value
        value = self.content.get("data")
        return self.content.value_at(0) if value is None else value

    def get_as_string(self, key=None) -> str:
        return self.get_as_bytes(key=key).decode("utf-8")

    def get_as_json(self, key=None):
        return json.loads(self.get_as_bytes(key=key).decode("utf-8"))

    def is_empty(self):
        return self.content.is_empty()

    def read(self, conn):
        prop_size = retrieve_short(conn)
        for _ in range(prop_size):
            key = retrieve_utf8(conn)
            val = retrieve_utf8(conn)
            self.properties[key] = val
        content_size = retrieve_short(conn)
        for _ in range(content_size):
            key = retrieve_utf8(conn)
            length = retrieve_int(conn)
            val = retrieve_buffer(conn, length)
            self.content.add(key=key, value=val)
        self.function_name = self.properties.get("handler")
