"""The environment's DynamoDB table: locks and the release history.

Its key schema is fixed (docs/deploy.md): `pk` (string, hash) and `sk` (string,
range), on-demand billing. Items:

| pk | sk | what |
| --- | --- | --- |
| `lock#ENV` | SERVICE | the deploy lock of one service (a lease) |
| `release#ENV` | `SERVICE#DEPLOY_ID` | one deploy or rollback and its outcome |
"""

from __future__ import annotations

from typing import Any

from fleet import aws


class ConditionFailed(Exception):
    """A conditional write found the item not as required (someone else holds it)."""


class Table:
    def __init__(self, name: str):
        self.name = name
        self.client = aws.client("dynamodb")

    def put(self, item: dict[str, Any], condition: str | None = None,
            values: dict[str, Any] | None = None, what: str = "writing to") -> None:
        kwargs: dict[str, Any] = {"TableName": self.name, "Item": _encode(item)}
        if condition:
            kwargs["ConditionExpression"] = condition
        if values:
            kwargs["ExpressionAttributeValues"] = _encode(values)
        self._conditional(f"{what} {self.name}", self.client.put_item, kwargs)

    def update(self, pk: str, sk: str, sets: dict[str, Any], condition: str | None = None,
               values: dict[str, Any] | None = None) -> None:
        names = {f"#k{i}": key for i, key in enumerate(sets)}
        assignments = ", ".join(f"#k{i} = :v{i}" for i in range(len(sets)))
        all_values = {f":v{i}": value for i, value in enumerate(sets.values())} | (values or {})
        kwargs: dict[str, Any] = {
            "TableName": self.name, "Key": _encode({"pk": pk, "sk": sk}), "UpdateExpression": f"SET {assignments}",
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": _encode(all_values)}
        if condition:
            kwargs["ConditionExpression"] = condition
        self._conditional(f"updating {self.name}", self.client.update_item, kwargs)

    def delete(self, pk: str, sk: str, condition: str | None = None, values: dict[str, Any] | None = None) -> None:
        kwargs: dict[str, Any] = {"TableName": self.name, "Key": _encode({"pk": pk, "sk": sk})}
        if condition:
            kwargs["ConditionExpression"] = condition
        if values:
            kwargs["ExpressionAttributeValues"] = _encode(values)
        self._conditional(f"deleting from {self.name}", self.client.delete_item, kwargs)

    def get(self, pk: str, sk: str) -> dict[str, Any] | None:
        found = aws.call(f"reading {self.name}", self.client.get_item, TableName=self.name,
                         Key=_encode({"pk": pk, "sk": sk}), ConsistentRead=True)
        return _decode(found["Item"]) if "Item" in found else None

    def query(self, pk: str, prefix: str = "") -> list[dict[str, Any]]:
        """Every item of partition `pk` (whose sort key starts with `prefix`), in order."""
        condition = "pk = :pk" + (" AND begins_with(sk, :prefix)" if prefix else "")
        values = {":pk": pk} | ({":prefix": prefix} if prefix else {})
        paginator = self.client.get_paginator("query")
        pages = aws.call(f"reading {self.name}", lambda: list(paginator.paginate(
            TableName=self.name, KeyConditionExpression=condition, ExpressionAttributeValues=_encode(values),
            ConsistentRead=True)))
        return [_decode(item) for page in pages for item in page.get("Items", [])]

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = aws.call(f"reading the table {self.name}", self.client.describe_table,
                                         TableName=self.name)["Table"]
        return found

    @staticmethod
    def _conditional(what: str, fn: Any, kwargs: dict[str, Any]) -> None:
        try:
            aws.call(what, fn, **kwargs)
        except aws.AwsError as exc:
            if exc.code == "ConditionalCheckFailedException":
                raise ConditionFailed(what) from None
            raise


def _encode(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer
    serializer = TypeSerializer()
    return {key: serializer.serialize(_numbers(value)) for key, value in item.items()}


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer
    deserializer = TypeDeserializer()
    return {key: _floats(deserializer.deserialize(value)) for key, value in item.items()}


def _numbers(value: Any) -> Any:
    """DynamoDB numbers are Decimals; floats are not accepted by boto3's serializer."""
    from decimal import Decimal
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _floats(value: Any) -> Any:
    from decimal import Decimal
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value
