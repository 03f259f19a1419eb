"""The built-in warning templates: nine hazards in four colours, in Chinese and English.

Pure: no I/O. A template holds what an office would otherwise type on the night of a typhoon:
the headline, what the loudspeaker says (short spoken sentences, no symbols a synthesiser
stumbles on), the instruction (the defence guide), a short SMS text and how long the warning
lasts. The Chinese wording follows the China Meteorological Administration's warning signals
(气象灾害预警信号及防御指南) and, for floods, landslides and storm surges, the water-resources,
natural-resources and ocean services' warnings. Texts may hold ``{area}``, replaced by the
names of the areas when a warning is made from the template (``render``).

An office may override the texts of a template (``TemplateEdit``, kept per office by
``dispatcher.store.templates``); ``apply_edit`` gives the template as that office sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.core.models import MAX_EXPIRES_IN, MIN_EXPIRES_IN, Severity, plain_text
from dispatcher.core.validation import speakable

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")
AREA = "{area}"
# Area names a rendered text spells out; more are summed up ("…等5个地区").
NAMED_AREAS = 3
TEXT_FIELDS = ("headline", "text", "instruction", "sms_text")

_COLOURS: tuple[Severity, ...] = (Severity.BLUE, Severity.YELLOW, Severity.ORANGE, Severity.RED)
_COLOUR_ZH = {Severity.BLUE: "蓝色", Severity.YELLOW: "黄色", Severity.ORANGE: "橙色",
              Severity.RED: "红色"}  # fmt: skip
_COLOUR_EN = {Severity.BLUE: "Blue", Severity.YELLOW: "Yellow", Severity.ORANGE: "Orange",
              Severity.RED: "Red"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Texts:
    zh: str
    en: str

    def get(self, lang: Lang) -> str:
        return self.zh if lang == "zh" else self.en

    def as_dict(self) -> dict[str, str]:
        return {"zh": self.zh, "en": self.en}


@dataclass(frozen=True, slots=True)
class WarningTemplate:
    id: str  # "{hazard}-{colour}", e.g. typhoon-red
    hazard: str
    event: str
    event_en: str
    event_code: str
    severity: Severity
    headline: Texts
    text: Texts  # what the loudspeaker says
    instruction: Texts
    sms_text: Texts
    expires_in: int  # seconds
    edited: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hazard": self.hazard,
            "event": self.event,
            "event_en": self.event_en,
            "event_code": self.event_code,
            "severity": self.severity.value,
            "severity_label": self.severity.label_zh,
            "headline": self.headline.as_dict(),
            "text": self.text.as_dict(),
            "instruction": self.instruction.as_dict(),
            "sms_text": self.sms_text.as_dict(),
            "expires_in": self.expires_in,
            "edited": self.edited,
        }


@dataclass(frozen=True, slots=True)
class _Level:
    """One colour of a hazard: what is happening (spoken), what to do, the SMS's short advice."""

    criterion: Texts
    guide: Texts
    advice: Texts


@dataclass(frozen=True, slots=True)
class _Hazard:
    id: str
    event: str
    event_en: str
    event_code: str
    hours: int  # how long a warning of it lasts by default
    levels: dict[Severity, _Level]


def _level(criterion_zh: str, criterion_en: str, guide_zh: str, guide_en: str,
           advice_zh: str, advice_en: str) -> _Level:  # fmt: skip
    return _Level(
        Texts(criterion_zh, criterion_en), Texts(guide_zh, guide_en), Texts(advice_zh, advice_en)
    )


# GB/T 35561-2017 event codes. 11B01 typhoon, 11B03 rainstorm, 11B05 cold wave, 11B09 high
# temperature, 11B14 lightning and 11B17 fog are the codes the national early-warning release
# system (国家突发事件预警信息发布系统) uses in its CAP messages. Less certain, from the
# standard's structure (11A flood and drought, 11D geological, 11E marine disasters): 11A01
# flood, 11D02 landslide (11D01 is taken to be collapse, 11D03 debris flow) and 11E01 storm
# surge; check them against the standard's table before relying on them in an exchange.
_HAZARDS: tuple[_Hazard, ...] = (
    _Hazard(
        "typhoon",
        "台风",
        "Typhoon",
        "11B01",
        24,
        {
            Severity.BLUE: _level(
                "24小时内可能或者已经受热带气旋影响，沿海或者陆地平均风力达6级以上，"
                "或者阵风8级以上并可能持续。",
                "Within 24 hours a tropical cyclone may affect or is affecting the area, with mean "
                "winds of force 6 or more, or gusts of force 8 or more, which may persist.",
                "做好防风准备；注意有关媒体报道的台风最新消息；把门窗、围板、棚架、"
                "临时搭建物等易被风吹动的搭建物固紧，妥善安置易受台风影响的室外物品。",
                "Prepare for strong winds. Follow the latest typhoon news. Fasten doors, windows, "
                "hoardings, sheds and other structures the wind could move, and secure outdoor "
                "objects.",
                "请做好防风准备，固紧门窗。",
                "Prepare for strong winds and fasten doors and windows.",
            ),
            Severity.YELLOW: _level(
                "24小时内可能或者已经受热带气旋影响，沿海或者陆地平均风力达8级以上，"
                "或者阵风10级以上并可能持续。",
                "Within 24 hours a tropical cyclone may affect or is affecting the area, with mean "
                "winds of force 8 or more, or gusts of force 10 or more, which may persist.",
                "停止室内外大型集会和高空等户外危险作业；相关水域船舶回港避风，"
                "加固港口设施；加固或者拆除易被风吹动的搭建物，人员切勿随意外出。",
                "Stop large gatherings and dangerous outdoor work at height. Boats return to port. "
                "Reinforce or take down structures the wind could move, and do not go out without "
                "need.",
                "请停止户外作业，船只回港避风，切勿随意外出。",
                "Stop outdoor work, bring boats to port and stay indoors.",
            ),
            Severity.ORANGE: _level(
                "12小时内可能或者已经受热带气旋影响，沿海或者陆地平均风力达10级以上，"
                "或者阵风12级以上并可能持续。",
                "Within 12 hours a tropical cyclone may affect or is affecting the area, with mean "
                "winds of force 10 or more, or gusts of force 12 or more, which may persist.",
                "停止室内外大型集会、停课、停业；回港避风的船舶要视情况采取积极措施；"
                "切断危险的室外电源；危房和低洼地区人员及时转移，人员留在安全场所。",
                "Stop large gatherings, close schools and businesses. Switch off dangerous "
                "outdoor power. People in unsafe houses and low-lying areas move to safety at "
                "once and stay in safe places.",
                "请停课停业，危房和低洼地区人员立即转移。",
                "Schools and shops close; people in unsafe houses and low areas move now.",
            ),
            Severity.RED: _level(
                "6小时内可能或者已经受热带气旋影响，沿海或者陆地平均风力达12级以上，"
                "或者阵风达14级以上并可能持续。",
                "Within 6 hours a tropical cyclone may affect or is affecting the area, with mean "
                "winds of force 12 or more, or gusts of force 14 or more, which may persist.",
                "停止集会、停课、停业；人员应当待在防风安全的地方，当台风中心经过时风力会减小"
                "或者静止一段时间，切记强风将会突然吹袭，应当继续留在安全处避风；"
                "危房人员和低洼地区人员立即转移。",
                "All gatherings, schools and businesses stop. Stay in a wind-safe place. When the "
                "eye passes the wind drops for a while, then strong winds return suddenly: stay "
                "where you are. People in unsafe houses and low-lying areas move to safety now.",
                "请立即转移到安全场所，切勿外出。",
                "Move to a safe place now and do not go out.",
            ),
        },
    ),
    _Hazard(
        "rainstorm",
        "暴雨",
        "Rainstorm",
        "11B03",
        12,
        {
            Severity.BLUE: _level(
                "12小时内降雨量将达50毫米以上，或者已达50毫米以上且降雨可能持续。",
                "Within 12 hours rainfall will reach 50 millimetres or more, or has reached it and "
                "may continue.",
                "做好防暴雨准备；学校、幼儿园采取适当措施，保证学生和幼儿安全；"
                "驾驶人员应当注意道路积水和交通阻塞；检查城市、农田、鱼塘排水系统。",
                "Prepare for heavy rain. Schools keep pupils safe. Drivers watch for flooded roads "
                "and jams. Check the drains of towns, fields and fish ponds.",
                "请注意防范，远离低洼地带。",
                "Take care and keep away from low-lying ground.",
            ),
            Severity.YELLOW: _level(
                "6小时内降雨量将达50毫米以上，或者已达50毫米以上且降雨可能持续。",
                "Within 6 hours rainfall will reach 50 millimetres or more, or has reached it and "
                "may continue.",
                "做好防暴雨工作；交通管理部门应当根据路况在强降雨路段采取交通管制措施；"
                "切断低洼地带有危险的室外电源，暂停在空旷地方的户外作业，"
                "转移危险地带人员和危房居民到安全场所避雨。",
                "Guard against heavy rain. Roads may be closed where the rain is strongest. Switch "
                "off dangerous outdoor power in low areas, stop outdoor work in the open, and move "
                "people from dangerous places and unsafe houses to shelter.",
                "请暂停户外作业，危险地带人员转移避雨。",
                "Stop outdoor work; people in danger zones move to shelter.",
            ),
            Severity.ORANGE: _level(
                "3小时内降雨量将达50毫米以上，或者已达50毫米以上且降雨可能持续。",
                "Within 3 hours rainfall will reach 50 millimetres or more, or has reached it and "
                "may continue.",
                "切断有危险的室外电源，暂停户外作业；处于危险地带的单位应当停课、停业，"
                "采取专门措施保护已到校学生、幼儿和其他上班人员的安全；"
                "做好城市、农田的排涝，注意防范可能引发的山洪、滑坡、泥石流等灾害。",
                "Switch off dangerous outdoor power and stop outdoor work. Schools and businesses "
                "in danger zones close and protect those already there. Drain towns and fields, "
                "and watch for flash floods, landslides and debris flows.",
                "请停止户外作业，防范山洪和滑坡。",
                "Stop outdoor work; beware of flash floods and landslides.",
            ),
            Severity.RED: _level(
                "3小时内降雨量将达100毫米以上，或者已达100毫米以上且降雨可能持续。",
                "Within 3 hours rainfall will reach 100 millimetres or more, or has reached it and "
                "may continue.",
                "停止集会、停课、停业（除特殊行业外）；做好山洪、滑坡、泥石流等灾害的防御和"
                "抢险工作；危险地带人员立即转移到安全场所。",
                "All gatherings, schools and businesses stop, except essential services. Guard "
                "against flash floods, landslides and debris flows. People in danger zones move to "
                "safety now.",
                "请立即转移到安全场所，远离河道和山边。",
                "Move to safety now, away from rivers and hillsides.",
            ),
        },
    ),
    _Hazard(
        "flood",
        "洪水",
        "Flood",
        "11A01",
        24,
        {
            Severity.BLUE: _level(
                "江河水位将接近警戒水位，或者洪水重现期接近5年一遇。",
                "River levels will come close to the warning level, or a flood of about a "
                "five-year return period is expected.",
                "关注水情变化；检查堤防、涵闸和排水设施；沿河低洼地区做好转移准备。",
                "Follow the water levels. Check dikes, sluices and drains. Low-lying riverside "
                "areas prepare to move.",
                "请关注水情，沿河低洼地区做好转移准备。",
                "Watch the water; low riverside areas prepare to move.",
            ),
            Severity.YELLOW: _level(
                "江河水位将达到或者超过警戒水位，或者洪水重现期达到5年一遇以上。",
                "River levels will reach or pass the warning level, or a flood of a five-year "
                "return period or more is expected.",
                "加强堤防巡查；不要在河道、沟渠边停留；沿河低洼地区人员做好转移准备，"
                "老人和儿童先行转移。",
                "Patrol the dikes. Do not stay near rivers or ditches. Low-lying riverside areas "
                "prepare to move; the old and children move first.",
                "请远离河道，老人儿童先行转移。",
                "Keep away from rivers; the old and children move first.",
            ),
            Severity.ORANGE: _level(
                "江河水位将达到或者超过保证水位，或者洪水重现期达到20年一遇以上。",
                "River levels will reach or pass the guaranteed safe level, or a flood of a "
                "twenty-year return period or more is expected.",
                "沿河低洼地区人员立即转移；停止河道内作业和涉水活动；"
                "做好堤防抢险准备，切断低洼地带的危险电源。",
                "People in low-lying riverside areas move now. Stop all work and activity in the "
                "river. Stand by to repair dikes and cut dangerous power in low areas.",
                "沿河低洼地区人员请立即转移。",
                "Low-lying riverside areas: move to safety now.",
            ),
            Severity.RED: _level(
                "江河水位将达到或者超过历史最高水位，或者洪水重现期达到50年一遇以上。",
                "River levels will reach or pass the highest on record, or a flood of a fifty-year "
                "return period or more is expected.",
                "受威胁地区人员必须立即转移到高处和安全场所；停止集会、停课、停业；"
                "严禁涉水和靠近河道，服从现场指挥。",
                "Everyone in the threatened area must move to high, safe ground now. Gatherings, "
                "schools and businesses stop. Do not wade or go near the river; follow the "
                "responders' orders.",
                "请立即转移到高处，严禁涉水和靠近河道。",
                "Move to high ground now; do not wade or go near the river.",
            ),
        },
    ),
    _Hazard(
        "landslide",
        "山体滑坡",
        "Landslide",
        "11D02",
        24,
        {
            Severity.BLUE: _level(
                "受降雨影响，发生山体滑坡等地质灾害有一定风险。",
                "Because of the rain there is some risk of landslides and other geological "
                "hazards.",
                "关注降雨和山体变化；检查房前屋后的山坡，发现裂缝、滚石等异常及时报告。",
                "Watch the rain and the slopes. Check the hillsides around houses and report "
                "cracks, falling stones or other signs at once.",
                "请留意房前屋后山坡，发现异常及时报告。",
                "Watch the slopes near houses and report any signs.",
            ),
            Severity.YELLOW: _level(
                "受降雨影响，发生山体滑坡等地质灾害的风险较高。",
                "Because of the rain the risk of landslides and other geological hazards is high.",
                "加强隐患点巡查；不要在山脚、陡坡下停留；隐患点附近人员做好转移准备。",
                "Patrol the known danger spots. Do not stay at the foot of hills or below steep "
                "slopes. People near danger spots prepare to move.",
                "请远离山脚陡坡，隐患点人员做好转移准备。",
                "Keep away from steep slopes; people near danger spots prepare to move.",
            ),
            Severity.ORANGE: _level(
                "受降雨影响，发生山体滑坡等地质灾害的风险高。",
                "Because of the rain the risk of landslides and other geological hazards is very "
                "high.",
                "隐患点和危险区人员立即转移；停止山区户外活动和作业；封闭危险路段，不要进入山区。",
                "People at danger spots and in danger zones move now. Stop outdoor activity and "
                "work in the hills. Close dangerous roads; do not go into the hills.",
                "隐患点和危险区人员请立即转移。",
                "People at danger spots: move to safety now.",
            ),
            Severity.RED: _level(
                "受降雨影响，发生山体滑坡等地质灾害的风险很高。",
                "Because of the rain the risk of landslides and other geological hazards is "
                "extreme.",
                "危险区内所有人员必须立即转移到安全场所，转移后不要返回；"
                "停止集会、停课、停业；服从现场指挥。",
                "Everyone in the danger zone must move to a safe place now and not go back. "
                "Gatherings, schools and businesses stop. Follow the responders' orders.",
                "危险区内人员请立即转移，转移后不要返回。",
                "Leave the danger zone now and do not go back.",
            ),
        },
    ),
    _Hazard(
        "storm-surge",
        "风暴潮",
        "Storm surge",
        "11E01",
        24,
        {
            Severity.BLUE: _level(
                "受风暴潮影响，沿海将出现达到蓝色警戒潮位的高潮位。",
                "A storm surge will bring high tides that reach the blue warning tide level on the "
                "coast.",
                "关注潮位变化；检查海堤和防潮设施；海上作业和养殖人员做好防范。",
                "Follow the tide levels. Check sea walls and tide defences. People working or "
                "farming at sea take care.",
                "请关注潮位，海上作业人员注意防范。",
                "Watch the tides; people at sea take care.",
            ),
            Severity.YELLOW: _level(
                "受风暴潮影响，沿海将出现达到黄色警戒潮位的高潮位。",
                "A storm surge will bring high tides that reach the yellow warning tide level on "
                "the coast.",
                "船舶回港避风；海上养殖人员撤离上岸；不要到海边和堤岸观潮。",
                "Boats return to port. Fish farmers come ashore. Do not go to the shore or the sea "
                "walls to watch the tide.",
                "请船只回港，养殖人员上岸，切勿海边观潮。",
                "Boats to port, farmers ashore; do not watch the tide.",
            ),
            Severity.ORANGE: _level(
                "受风暴潮影响，沿海将出现达到橙色警戒潮位的高潮位。",
                "A storm surge will bring high tides that reach the orange warning tide level on "
                "the coast.",
                "沿海低洼地区人员立即转移；加固海堤；停止海边一切活动。",
                "People in low-lying coastal areas move now. Reinforce the sea walls. Stop all "
                "activity on the shore.",
                "沿海低洼地区人员请立即转移。",
                "Low-lying coastal areas: move to safety now.",
            ),
            Severity.RED: _level(
                "受风暴潮影响，沿海将出现达到红色警戒潮位的高潮位。",
                "A storm surge will bring high tides that reach the red warning tide level on the "
                "coast.",
                "沿海受威胁地区人员必须立即转移到高处和安全场所；停止集会、停课、停业；"
                "服从现场指挥。",
                "Everyone in threatened coastal areas must move to high, safe ground now. "
                "Gatherings, schools and businesses stop. Follow the responders' orders.",
                "沿海人员请立即转移到高处安全场所。",
                "Coastal residents: move to high ground now.",
            ),
        },
    ),
    # CMA's high-temperature, fog and lightning signals have no blue level; these templates'
    # blue is the advisory some provinces issue below yellow.
    _Hazard(
        "high-temperature",
        "高温",
        "High temperature",
        "11B09",
        24,
        {
            Severity.BLUE: _level(
                "48小时内最高气温将升至35摄氏度左右。",
                "Within 48 hours the highest temperature will rise to about 35 degrees Celsius.",
                "注意防暑降温；减少午后户外活动；多喝水。",
                "Keep cool. Go out less in the afternoon. Drink plenty of water.",
                "请注意防暑降温，多喝水。",
                "Keep cool and drink plenty of water.",
            ),
            Severity.YELLOW: _level(
                "连续三天日最高气温将在35摄氏度以上。",
                "The highest temperature will be 35 degrees Celsius or more for three days in a "
                "row.",
                "做好防暑降温准备；午后尽量减少户外活动；对老、弱、病、幼人群提供防暑降温指导；"
                "高温条件下作业和白天需要长时间进行户外露天作业的人员应当采取必要的防护措施。",
                "Prepare to keep cool. Avoid going out in the afternoon. Look after the old, the "
                "weak, the sick and the young. Outdoor workers take protective measures.",
                "请减少午后户外活动，照顾好老人儿童。",
                "Avoid going out in the afternoon; look after the old and the young.",
            ),
            Severity.ORANGE: _level(
                "24小时内最高气温将升至37摄氏度以上。",
                "Within 24 hours the highest temperature will rise to 37 degrees Celsius or more.",
                "午后尽量减少户外活动；对老、弱、病、幼人群提供防暑降温指导；"
                "有关部门和单位应当注意防范因用电量过高，以及电线、变压器等电力负载过大而引发的"
                "火灾。",
                "Avoid going out in the afternoon. Look after the old, the weak, the sick and the "
                "young. Beware of fires from overloaded wires and transformers.",
                "请避免午后外出，注意防暑和用电安全。",
                "Avoid going out in the afternoon; beware of heat and electrical fires.",
            ),
            Severity.RED: _level(
                "24小时内最高气温将升至40摄氏度以上。",
                "Within 24 hours the highest temperature will rise to 40 degrees Celsius or more.",
                "停止户外露天作业（除特殊行业外）；对老、弱、病、幼人群采取保护措施；"
                "注意防范因用电量过高引发的火灾。",
                "Stop outdoor work in the open, except essential services. Protect the old, the "
                "weak, the sick and the young. Beware of fires from overloaded power lines.",
                "请停止户外作业，保护好老人儿童。",
                "Stop outdoor work; protect the old and the young.",
            ),
        },
    ),
    _Hazard(
        "cold-wave",
        "寒潮",
        "Cold wave",
        "11B05",
        48,
        {
            Severity.BLUE: _level(
                "48小时内最低气温将要下降8摄氏度以上，最低气温小于等于4摄氏度，"
                "陆地平均风力可达5级以上。",
                "Within 48 hours the lowest temperature will drop by 8 degrees or more to 4 "
                "degrees Celsius or less, with mean winds of force 5 or more.",
                "做好防寒准备；注意添衣保暖；对热带作物、水产品采取一定的防护措施。",
                "Prepare for the cold. Dress warmly. Protect tropical crops and fish stocks.",
                "请注意添衣保暖。",
                "Dress warmly.",
            ),
            Severity.YELLOW: _level(
                "24小时内最低气温将要下降10摄氏度以上，最低气温小于等于4摄氏度，"
                "陆地平均风力可达6级以上。",
                "Within 24 hours the lowest temperature will drop by 10 degrees or more to 4 "
                "degrees Celsius or less, with mean winds of force 6 or more.",
                "做好防寒和防风工作；注意添衣保暖，照顾好老、弱、病人；"
                "对牲畜、家禽和作物等采取防寒措施。",
                "Guard against cold and wind. Dress warmly and look after the old, the weak and "
                "the sick. Protect livestock, poultry and crops from the cold.",
                "请注意防寒防风，照顾好老人和病人。",
                "Guard against cold and wind; look after the old and the sick.",
            ),
            Severity.ORANGE: _level(
                "24小时内最低气温将要下降12摄氏度以上，最低气温小于等于0摄氏度，"
                "陆地平均风力可达6级以上。",
                "Within 24 hours the lowest temperature will drop by 12 degrees or more to 0 "
                "degrees Celsius or less, with mean winds of force 6 or more.",
                "做好防寒和防风工作；减少户外活动；做好牲畜、家禽的防寒防风；"
                "注意防范道路结冰和水管冻裂。",
                "Guard against cold and wind and go out less. Shelter livestock and poultry. "
                "Beware of icy roads and frozen pipes.",
                "请减少外出，注意防寒和道路结冰。",
                "Go out less; beware of the cold and icy roads.",
            ),
            Severity.RED: _level(
                "24小时内最低气温将要下降16摄氏度以上，最低气温小于等于0摄氏度，"
                "陆地平均风力可达6级以上。",
                "Within 24 hours the lowest temperature will drop by 16 degrees or more to 0 "
                "degrees Celsius or less, with mean winds of force 6 or more.",
                "做好防寒和防风的应急工作；尽量避免户外活动；"
                "对老、弱、病人采取保护措施；农业、水产业、畜牧业做好防冻害工作。",
                "Take emergency measures against cold and wind. Avoid going out. Protect the old, "
                "the weak and the sick. Farms, fisheries and herds guard against frost damage.",
                "请避免外出，做好防寒防冻。",
                "Avoid going out; protect against frost and cold.",
            ),
        },
    ),
    _Hazard(
        "fog",
        "大雾",
        "Fog",
        "11B17",
        12,
        {
            Severity.BLUE: _level(
                "24小时内可能出现能见度小于1000米的雾。",
                "Within 24 hours there may be fog with visibility below 1000 metres.",
                "驾驶人员注意雾的变化，小心驾驶；减少户外活动。",
                "Drivers watch for fog and drive carefully. Go out less.",
                "请小心驾驶，注意行车安全。",
                "Drive carefully in the fog.",
            ),
            Severity.YELLOW: _level(
                "12小时内可能出现能见度小于500米的雾，或者已经出现能见度小于500米、"
                "大于等于200米的雾并将持续。",
                "Within 12 hours there may be fog with visibility below 500 metres, or such fog "
                "has formed and will persist.",
                "机场、高速公路、轮渡码头等单位加强交通管理；驾驶人员注意雾的变化，小心驾驶；"
                "户外活动注意安全。",
                "Airports, motorways and ferries tighten traffic control. Drivers watch for fog "
                "and drive carefully. Take care outdoors.",
                "请减速慢行，注意交通安全。",
                "Slow down and take care on the roads.",
            ),
            Severity.ORANGE: _level(
                "6小时内可能出现能见度小于200米的雾，或者已经出现能见度小于200米、"
                "大于等于50米的雾并将持续。",
                "Within 6 hours there may be fog with visibility below 200 metres, or such fog has "
                "formed and will persist.",
                "机场、高速公路、轮渡码头等单位加强调度指挥；驾驶人员必须严格控制车、船的行进"
                "速度；减少户外活动。",
                "Airports, motorways and ferries manage traffic closely. Drivers and skippers keep "
                "their speed strictly down. Go out less.",
                "请严格控制车速，减少外出。",
                "Keep your speed strictly down and go out less.",
            ),
            Severity.RED: _level(
                "2小时内可能出现能见度小于50米的雾，或者已经出现能见度小于50米的雾并将持续。",
                "Within 2 hours there may be fog with visibility below 50 metres, or such fog has "
                "formed and will persist.",
                "有关单位按照行业规定适时采取交通安全管制措施，如机场暂停飞机起降，高速公路暂时"
                "封闭，轮渡暂时停航等；驾驶人员根据雾天行驶规定，采取雾天预防措施，"
                "根据环境条件采取合理行驶方式，并尽快寻找安全停放区域停靠；不要进行户外活动。",
                "Airports may stop flights, motorways close and ferries stop. Drivers follow the "
                "fog rules and stop in a safe place as soon as they can. Do not go out.",
                "请就近安全停车，不要外出。",
                "Stop in a safe place and do not go out.",
            ),
        },
    ),
    _Hazard(
        "thunder",
        "雷电",
        "Thunder and lightning",
        "11B14",
        6,
        {
            Severity.BLUE: _level(
                "12小时内可能发生雷电活动。",
                "Within 12 hours there may be thunder and lightning.",
                "关注天气变化；雷雨时不要在空旷地带和大树下停留。",
                "Follow the weather. In a storm do not stay in the open or under big trees.",
                "雷雨时请勿在空旷地和大树下停留。",
                "In a storm keep out of open ground and away from trees.",
            ),
            Severity.YELLOW: _level(
                "6小时内可能发生雷电活动，可能会造成雷电灾害事故。",
                "Within 6 hours there may be thunder and lightning, which may cause lightning "
                "accidents.",
                "密切关注天气，尽量避免户外活动。",
                "Watch the weather closely and avoid going out.",
                "请尽量避免户外活动。",
                "Avoid going out.",
            ),
            Severity.ORANGE: _level(
                "2小时内发生雷电活动的可能性很大，或者已经受雷电活动影响，且可能持续，"
                "出现雷电灾害事故的可能性比较大。",
                "Within 2 hours thunder and lightning are very likely, or have begun and may "
                "persist, and lightning accidents are quite likely.",
                "人员应当留在室内，并关好门窗；户外人员应当躲入有防雷设施的建筑物或者汽车内；"
                "切断危险电源，不要在树下、电杆下、塔吊下避雨；"
                "在空旷场地不要打伞，不要把农具、羽毛球拍、高尔夫球杆等扛在肩上。",
                "Stay indoors and close doors and windows. People outside go into protected "
                "buildings or cars. Cut dangerous power. Do not shelter under trees, poles or "
                "cranes, and do not hold umbrellas or tools up in the open.",
                "请留在室内，关好门窗，切勿在树下避雨。",
                "Stay indoors; do not shelter under trees.",
            ),
            Severity.RED: _level(
                "2小时内发生雷电活动的可能性非常大，或者已经有强烈的雷电活动发生，且可能持续，"
                "出现雷电灾害事故的可能性非常大。",
                "Within 2 hours thunder and lightning are almost certain, or severe lightning has "
                "begun and may persist, and lightning accidents are very likely.",
                "尽量躲入有防雷设施的建筑物或者汽车内，并关好门窗；切勿接触天线、水管、"
                "铁丝网、金属门窗、建筑物外墙，远离电线等带电设备和其他类似金属装置；"
                "尽量不要使用无防雷装置或者防雷装置不完备的电视、电话等电器；"
                "密切注意雷电预警信息的发布。",
                "Go into a protected building or car and close doors and windows. Do not touch "
                "aerials, water pipes, wire fences, metal doors or outside walls, and keep away "
                "from power lines. Do not use unprotected electrical appliances. Follow the "
                "lightning warnings.",
                "请立即躲入室内，远离金属物和电线。",
                "Go indoors now; keep away from metal and power lines.",
            ),
        },
    ),
)
HAZARD_IDS = tuple(h.id for h in _HAZARDS)


def _built_in(hazard: _Hazard, severity: Severity) -> WarningTemplate:
    level = hazard.levels[severity]
    colour_zh, colour_en = _COLOUR_ZH[severity], _COLOUR_EN[severity]
    headline = Texts(
        f"{AREA}{hazard.event}{colour_zh}预警",
        f"{colour_en} {hazard.event_en.lower()} warning for {AREA}",
    )
    return WarningTemplate(
        id=f"{hazard.id}-{severity.value}",
        hazard=hazard.id,
        event=hazard.event,
        event_en=hazard.event_en,
        event_code=hazard.event_code,
        severity=severity,
        headline=headline,
        text=Texts(
            f"{AREA}{hazard.event}{colour_zh}预警。{level.criterion.zh}",
            f"{colour_en} {hazard.event_en.lower()} warning for {AREA}. {level.criterion.en}",
        ),
        instruction=level.guide,
        sms_text=Texts(
            f"{AREA}{hazard.event}{colour_zh}预警：{level.advice.zh}",
            f"{colour_en} {hazard.event_en.lower()} warning for {AREA}: {level.advice.en}",
        ),
        expires_in=hazard.hours * 3600,
    )


BUILT_IN: dict[str, WarningTemplate] = {
    template.id: template
    for template in (_built_in(h, severity) for h in _HAZARDS for severity in reversed(_COLOURS))
}


class LangTexts(BaseModel):
    """One text of a template in both languages, as an office edits it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    zh: str = Field(min_length=1)
    en: str = Field(min_length=1)


class TemplateEdit(BaseModel):
    """``PUT /api/v1/templates/{id}``: the texts (and lifetime) an office gives a template;
    what it leaves out stays as built in. Checked like an alert's texts: one line for the
    headline, no control or bidi characters, nothing a loudspeaker cannot say in what it
    reads out."""

    model_config = ConfigDict(extra="forbid")

    headline: LangTexts | None = None
    text: LangTexts | None = None
    instruction: LangTexts | None = None
    sms_text: LangTexts | None = None
    expires_in: int | None = Field(default=None, ge=MIN_EXPIRES_IN, le=MAX_EXPIRES_IN)

    @field_validator("headline")
    @classmethod
    def _headline(cls, value: LangTexts | None) -> LangTexts | None:
        return _checked(value, multiline=False, spoken=True, most=120)

    @field_validator("text")
    @classmethod
    def _text(cls, value: LangTexts | None) -> LangTexts | None:
        return _checked(value, multiline=True, spoken=True, most=1000)

    @field_validator("instruction")
    @classmethod
    def _instruction(cls, value: LangTexts | None) -> LangTexts | None:
        return _checked(value, multiline=True, spoken=True, most=500)

    @field_validator("sms_text")
    @classmethod
    def _sms_text(cls, value: LangTexts | None) -> LangTexts | None:
        return _checked(value, multiline=True, spoken=False, most=500)

    def changes(self) -> dict[str, Any]:
        """What the edit sets, as stored."""
        return self.model_dump(exclude_none=True)


def _checked(
    value: LangTexts | None, *, multiline: bool, spoken: bool, most: int
) -> LangTexts | None:
    if value is None:
        return None
    for lang in LANGS:
        text = getattr(value, lang)
        try:
            plain_text(text, multiline=multiline)
            if spoken:
                speakable(text)
        except ValueError as exc:
            raise ValueError(f"{lang}: {exc}") from None
        if len(text) > most:
            raise ValueError(f"{lang}: at most {most} characters, got {len(text)}")
    return value


def apply_edit(template: WarningTemplate, changes: dict[str, Any] | None) -> WarningTemplate:
    """``template`` as an office edited it (``TemplateEdit.changes``); unchanged if None."""
    if not changes:
        return template
    edit = TemplateEdit.model_validate(changes)
    fields: dict[str, Any] = {"edited": True}
    for name in TEXT_FIELDS:
        given: LangTexts | None = getattr(edit, name)
        if given is not None:
            fields[name] = Texts(given.zh, given.en)
    if edit.expires_in is not None:
        fields["expires_in"] = edit.expires_in
    return replace(template, **fields)


def area_phrase(names: list[str], lang: Lang) -> str:
    """How a text names its areas: all of up to three, else the first three and a count."""
    shown = names[:NAMED_AREAS]
    more = len(names) - len(shown)
    if lang == "zh":
        return "、".join(shown) + (f"等{len(names)}个地区" if more else "")
    return ", ".join(shown) + (f" and {more} more areas" if more else "")


def render(
    template: WarningTemplate,
    *,
    lang: Lang,
    areas: list[str],
    area_names: list[str],
    sms: bool,
) -> dict[str, Any]:
    """The ``POST /api/v1/alerts`` body a template gives for ``areas`` (codes) whose names are
    ``area_names``, in ``lang``; with ``sms``, the SMS channel and the template's SMS text."""
    where = area_phrase(area_names, lang)

    def filled(texts: Texts) -> str:
        return texts.get(lang).replace(AREA, where)

    body: dict[str, Any] = {
        "event": template.event if lang == "zh" else template.event_en,
        "event_code": template.event_code,
        "severity": template.severity.value,
        "headline": filled(template.headline),
        "text": filled(template.text),
        "instruction": filled(template.instruction),
        "areas": list(areas),
        "channels": ["loudspeaker", "sms"] if sms else ["loudspeaker"],
        "expires_in": template.expires_in,
    }
    if sms:
        body["sms_text"] = filled(template.sms_text)
    return body
