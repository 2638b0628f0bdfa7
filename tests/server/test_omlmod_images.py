"""ONNX_IMG: images as base64 files in inputRecords, as `imageData` multipart parts, or as pixel arrays."""

from __future__ import annotations

import base64

from tests import scoring_models as sm
from tests.conftest import Api
from tests.server.support import SQLITE_ONLY
from tests.server.test_omlmod import DEPLOY, assert_error, deploy, score, store

pytestmark = SQLITE_ONLY


def test_image_model_scores_files_uploads_and_pixels(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, sm.colour_classifier(), "colours", "ONNX_IMG")
    meta = api.client.get(f"/omlmod/v1/models/{created['modelId']}/metadata", headers=h).json()
    assert meta["labels"] == ["red", "green", "blue"]
    assert meta["attributes"] == [{"name": "image", "attributeType": "FLOAT", "shape": [-1, 3, 8, 8]}]
    deploy(api, h, created["modelId"], "colours")

    images = [sm.png((250, 10, 10)), sm.png((10, 240, 10), size=50), sm.png((0, 0, 255))]
    records = [{"image": base64.b64encode(i).decode()} for i in images]
    results = score(api, h, "colours", {"inputRecords": records, "topN": 1})
    assert [r["classifications"][0]["label"] for r in results] == ["red", "green", "blue"]

    r = api.client.post(
        f"{DEPLOY}/colours/score",
        headers=h,
        files=[("imageData", ("a.png", images[2])), ("imageData", ("b.png", images[0]))],
    )
    assert r.status_code == 200, r.text
    assert [x["classifications"][0]["label"] for x in r.json()["scoringResults"]] == ["blue", "red"]

    green = [[[0.0] * 8] * 8, [[1.0] * 8] * 8, [[0.0] * 8] * 8]  # a pixel array, channels first
    assert score(api, h, "colours", {"inputRecords": [{"image": green}]})[0]["classifications"][0]["label"] == "green"

    assert_error(
        api.client.post(f"{DEPLOY}/colours/score", headers=h, json={"inputRecords": [{"image": "bm90IGFuIGltYWdl"}]}),
        400,
        "not an image file",
    )
    assert_error(api.client.post(f"{DEPLOY}/colours/score", headers=h, files={"other": ("x", b"1")}), 400, "imageData")


def test_images_need_an_image_model(api: Api) -> None:
    h = api.user("OML_USER")
    created = store(api, h, sm.regressor_onnx(), "income", "ONNX")
    deploy(api, h, created["modelId"], "income")
    r = api.client.post(f"{DEPLOY}/income/score", headers=h, files={"imageData": ("a.png", sm.png((1, 2, 3)))})
    assert_error(r, 400, "image")
