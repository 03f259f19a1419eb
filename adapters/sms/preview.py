"""How the SMS channel would word an alert, for its preview (``dispatcher.http.previews``):
the planner's composition, without planning anything."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.sms.settings import SmsSettings
from adapters.sms.text import compose
from dispatcher.core.models import AlertRequest
from dispatcher.core.preview import SmsShown


class SmsTextPreview:
    """``dispatcher.http.previews.SmsPreviewer``; ``signatures``: the 【signature】 of each
    office's texts, by office id (as ``SmsChannel`` takes them)."""

    def __init__(self, settings: SmsSettings, signatures: Mapping[str, str]) -> None:
        self._settings = settings
        self._signatures = dict(signatures)

    @property
    def cost_per_segment(self) -> float:
        return self._settings.cost_per_segment_yuan

    def texts(self, office_id: str, req: AlertRequest) -> dict[str, SmsShown]:
        out = {}
        for lang in ("zh", "en"):
            text = compose(
                signature=self._signatures.get(office_id, office_id),
                headline=req.headline,
                text=req.text,
                instruction=req.instruction,
                status=req.status.value,
                msg_type=req.msg_type.value,
                lang=lang,
                custom=req.sms_text,
                max_segments=self._settings.max_segments,
            )
            out[lang] = SmsShown(
                text=text.text,
                segments=text.segmentation.segments,
                encoding=text.segmentation.encoding.value,
                truncated=text.truncated,
            )
        return out
