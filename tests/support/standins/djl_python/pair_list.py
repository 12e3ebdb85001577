"""Stand-in for ``djl_python.pair_list.PairList``: an ordered list of (key, value)."""


class PairList:
    def __init__(self):
        self.keys = []
        self.values = []

    def add(self, key=None, value=None):
        self.keys.append(key)
        self.values.append(value)

    def get(self, key):
        if key in self.keys:
            return self.values[self.keys.index(key)]
        return None

    def get_keys(self):
        return self.keys

    def key_at(self, index):
        return self.keys[index]

    def value_at(self, index):
        return self.values[index]

    def size(self):
        return len(self.keys)

    def is_empty(self):
        return not self.keys
