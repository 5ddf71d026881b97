"""Compute profiles as data and a roofline latency model for one forward pass.

Pure: imports only the standard library, pydantic, yaml and testbed.common, and reads only its own data files
(nodes/compute/data/) and the table files it is pointed at. See docs/compute.md.
"""
from nodes.compute.costs import CostModel, LinearCost, PassCost, RooflineCost
from nodes.compute.profiles import (Device, Dtype, ModelArch, ProfileError, get_device, get_model, load_devices,
                                    load_models)
from nodes.compute.spec import cost_model_from_spec
from nodes.compute.table import TableCost

__all__ = ["Device", "Dtype", "ModelArch", "load_devices", "load_models", "get_device", "get_model",
           "CostModel", "RooflineCost", "TableCost", "LinearCost", "PassCost", "cost_model_from_spec",
           "ProfileError"]
