"""Stand-in for ``djl_python.test_model``: DJL's harness that runs a handler outside the server.

The request builders, the output decoders and ``TestHandler`` with the real behaviour,
including ``inference_rolling_batch``: every call sends all live requests again, the
later calls with ``{"inputs": ""}`` as their data, and each output is decoded with
``decode_encoded_output_binary`` and appended to its request's text until ``last``.
"""
from __future__ import annotations

import os
import struct
import sys
from types import ModuleType

from .inputs import Input
from .outputs import Output
from .pair_list import PairList
from .service_loader import ModelService, load_model_service


def create_concurrent_batch_request(inputs: list[dict], properties: list[dict] = None,
                                    serving_properties=None) -> Input:
    if properties is None:
        properties = []
    # As the real harness: the caller's serving_properties dict is filled in place.
    flatten_properties = serving_properties if serving_properties else {}
    for idx, data in enumerate(properties):
        for key, value in data.items():
            flatten_properties[f"batch_{str(idx).zfill(3)}_{key}"] = value
    pair_list = PairList()
    for idx, data in enumerate(inputs):
        pair_list.add(f"batch_{str(idx).zfill(3)}_data", Output._encode_json(data))
    inputs_obj = Input()
    inputs_obj.properties = flatten_properties
    inputs_obj.function_name = flatten_properties.get("handler", "handle")
    inputs_obj.content = pair_list
    flatten_properties["batch_size"] = len(inputs)
    return inputs_obj


def create_json_request(json_data: dict, key: str = None) -> Input:
    request = Input()
    request.properties["device_id"] = "-1"
    request.properties["content-type"] = "application/json"
    request.content.add(key=key, value=Output._encode_json(json_data))
    return request


def extract_output_as_input(outputs: Output) -> Input:
    inputs = Input()
    inputs.properties = outputs.properties
    inputs.content = outputs.content
    return inputs


def extract_output_as_bytes(outputs: Output, key=None):
    return extract_output_as_input(outputs).get_as_bytes(key)


def retrieve_int(bytearr: bytearray, start_iter):
    end_iter = start_iter + 4
    return struct.unpack(">i", bytearr[start_iter:end_iter])[0], end_iter


def retrieve_short(bytearr: bytearray, start_iter):
    end_iter = start_iter + 2
    return struct.unpack(">h", bytearr[start_iter:end_iter])[0], end_iter


def retrieve_utf8(bytearr: bytearray, start_iter):
    length, start_iter = retrieve_int(bytearr, start_iter)
    if length < 0:
        return None
    end_iter = start_iter + length
    return bytearr[start_iter:end_iter].decode("utf8"), end_iter


def decode_encoded_output_binary(binary: bytearray):
    start_iter = 0
    prop_size, start_iter = retrieve_short(binary, start_iter)
    content = {}
    for _ in range(prop_size):
        key, start_iter = retrieve_utf8(binary, start_iter)
        val, start_iter = retrieve_utf8(binary, start_iter)
        content[key] = val
    return content


def load_properties(properties_dir):
    if not properties_dir:
        return {}
    properties = {}
    properties_file = os.path.join(properties_dir, "serving.properties")
    if os.path.exists(properties_file):
        with open(properties_file) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                key, value = line.strip().split("=", 1)
                key = key.strip()
                if key.startswith("option."):
                    key = key[7:]
                properties[key] = value.strip()
    return properties


def update_properties_with_env_vars(kwargs):
    for key, value in os.environ.items():
        if key == "HF_MODEL_ID":
            kwargs.setdefault("model_id", value)
        if key.startswith("OPTION_"):
            key = key[7:].lower()
            if key == "entrypoint":
                key = "entryPoint"
            kwargs.setdefault(key, value)
    return kwargs


class TestHandler:

    def __init__(self, entry_point: str | ModuleType, model_dir: str = None):
        if os.getenv("OMPI_COMM_WORLD_SIZE"):
            os.environ["WORLD_SIZE"] = os.getenv("OMPI_COMM_WORLD_SIZE")
        if os.getenv("OMPI_COMM_WORLD_LOCAL_RANK"):
            os.environ["LOCAL_RANK"] = os.getenv("OMPI_COMM_WORLD_LOCAL_RANK")
        rank = os.environ.get("OMPI_COMM_WORLD_RANK")
        if rank:
            os.environ["RANK"] = rank
        self.serving_properties = update_properties_with_env_vars({})
        self.serving_properties.update(load_properties(model_dir))
        if isinstance(entry_point, str):
            os.chdir(model_dir)
            model_dir = os.getcwd()
            sys.path.append(model_dir)
            self.service = load_model_service(model_dir, entry_point, "-1")
        else:
            self.service = ModelService(entry_point, model_dir)
            # As the real harness: a module entry point must be one of LMI's, with a _service.
            self.service.module._service.initialized = False

    def inference(self, inputs: Input) -> Output:
        function_name = inputs.get_function_name() if inputs.get_function_name() else "handle"
        inputs.properties.update(self.serving_properties)
        return self.service.invoke_handler(function_name, inputs)

    def inference_batch(self, inputs: list[dict], properties: list[dict] = None, serving_properties=None) -> Output:
        return self.inference(create_concurrent_batch_request(inputs, properties, serving_properties))

    def inference_rolling_batch(self, inputs: list[dict], properties: list[dict] = None, serving_properties=None):
        cached_result = {}
        for idx in range(len(inputs)):
            cached_result[idx] = ""
        live_indices = [_ for _ in range(len(inputs))]
        while len(live_indices) > 0:
            outputs = self.inference_batch(inputs, properties, serving_properties)
            read_only_outputs = extract_output_as_input(outputs)
            encoded_content = read_only_outputs.get_content().values
            finished_indices = []
            for idx, binary in enumerate(encoded_content):
                data = decode_encoded_output_binary(binary)
                cached_result[live_indices[idx]] += data["data"]
                if data["last"].lower() == "true":
                    print(f"Finished request {live_indices[idx]}")
                    finished_indices.append(idx)
            for index in sorted(finished_indices, reverse=True):
                del live_indices[index]
            inputs = [{"inputs": ""} for _ in range(len(live_indices))]
        return cached_result
