"""Stand-in for ``djl_python.pair_list.PairList``: an ordered list of (key, value), two parallel lists."""


class PairList:
    def __init__(self, keys=None, values=None):
        if keys and values:
            if len(keys) != len(values):
                raise ValueError("key value size mismatch.")
            self.keys = keys
            self.values = values
        else:
            self.keys = []
            self.values = []

    def add(self, key=None, value=None, index=None, pair=None):
        if index is not None and value is not None:
            self.keys.insert(index, key)
            self.values.insert(index, value)
        elif pair:
            self.keys.append(pair[0])
            self.values.append(pair[1])
        elif value is not None:  # the real class drops a None value
            self.keys.append(key)
            self.values.append(value)

    def size(self):
        return len(self.keys)

    def is_empty(self):
        return self.size() == 0

    def get(self, key):
        if key not in self.keys:
            return None
        return self.values[self.keys.index(key)]

    def key_at(self, index: int):
        return self.keys[index]

    def value_at(self, index: int):
        return self.values[index]

    def get_keys(self):
        return self.keys

    def get_values(self) -> list:
        return self.values
