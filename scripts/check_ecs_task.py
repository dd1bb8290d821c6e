#!/usr/bin/env python3
"""Checks an ECS task definition file against botocore's RegisterTaskDefinition model."""

import json
import sys

import botocore.session
from botocore.validate import ParamValidator

path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    params = json.load(f)
model = botocore.session.get_session().get_service_model("ecs")
shape = model.operation_model("RegisterTaskDefinition").input_shape
report = ParamValidator().validate(params, shape)
if report.has_errors():
    print(f"{path}: {report.generate_report()}", file=sys.stderr)
    sys.exit(1)
print(f"{path}: valid RegisterTaskDefinition input")
