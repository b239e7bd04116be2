"""The returns-file readers: pure, no database. Structure only; values are the engine's job."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import random
import time
import zipfile
from pathlib import Path

import pytest

from payoutdesk.errors import PayoutdeskError
from payoutdesk.submissions.formats import (
    DEFAULT_LIMITS,
    FileRejected,
    Limits,
    ParsedFile,
    RawRow,
    Rows,
    parse,
)
from payoutdesk.submissions.formats.delimited import decimal_comma_to_dot
from payoutdesk.submissions.formats.workbook import cell_text

SAMPLES = Path(__file__).resolve().parent / "samples"  # the project's own (tests/samples/README.md)


def rows_of(parsed: ParsedFile) -> list[RawRow]:
    return list(parsed.rows)


def rejected(data: bytes, *, limits: Limits = DEFAULT_LIMITS, file_name: str | None = None) -> FileRejected:
    with pytest.raises(FileRejected) as info:
        parse(data, file_name, limits=limits)
    return info.value


def csv_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def zip_of(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def xlsx_of(rows: list[list[object]], *, extra_sheet_first: bool = False) -> bytes:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    for row in rows:
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


# --- the error itself -----------------------------------------------------------------------


def test_file_rejected_is_a_422_validation_error() -> None:
    assert issubclass(FileRejected, PayoutdeskError)
    assert FileRejected.status == 422
    assert FileRejected.code == "invalid_file"
    assert FileRejected.kind == "VALIDATION"


# --- the sample files ------------------------------------------------------------------------


def test_sample_bom_crlf_by_oid() -> None:
    data = (SAMPLES / "order_level_by_oid.csv").read_bytes()
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    parsed = parse(data, "order_level_by_oid.csv")
    assert parsed.format == "csv"
    assert parsed.columns == ("ActionTrackerId", "Oid", "Amount", "Reason")
    assert parsed.item_level is False
    rows = rows_of(parsed)
    assert [r.number for r in rows] == [1, 2, 3]
    assert rows[0].fields == {"ActionTrackerId": "7", "Oid": "ORD-5001", "Amount": "0", "Reason": "ITEM_RETURNED"}
    assert rows[1].fields["Amount"] == "62.40"
    assert rows[2].fields["Reason"] == "CONS_FRAUD"
    assert parsed.total == 3


def test_sample_by_action_id_with_note() -> None:
    parsed = parse((SAMPLES / "order_level_by_action_id.csv").read_bytes())
    assert parsed.columns == ("ActionId", "Amount", "Reason", "Note")
    rows = rows_of(parsed)
    assert rows[0].fields == {
        "ActionId": "2001", "Amount": "75.25", "Reason": "ORDER_UPDATE", "Note": "partial refund RMA-3141",
    }
    assert rows[1].fields == {"ActionId": "2002", "Amount": "0", "Reason": "ITEM_RETURNED"}  # empty Note omitted
    assert rows[2].fields == {"ActionId": "2003", "Reason": "APPROVED"}
    assert rows[3].fields == {"ActionId": "2004", "Reason": "RESET"}


def test_sample_item_level() -> None:
    parsed = parse((SAMPLES / "item_level.csv").read_bytes())
    assert parsed.item_level is True
    assert parsed.columns == (
        "ActionTrackerId", "Oid", "Sku1", "Quantity1", "Amount1", "Sku2", "Quantity2", "Amount2", "Reason",
    )
    first, second = rows_of(parsed)
    assert first.fields == {
        "ActionTrackerId": "7", "Oid": "ORD-6001", "Sku1": "SKU-JACKET-M", "Quantity1": "0",
        "Sku2": "SKU-SCARF", "Quantity2": "1", "Amount2": "24.50", "Reason": "ITEM_RETURNED",
    }
    assert second.fields == {
        "ActionTrackerId": "7", "Oid": "ORD-6002", "Sku1": "SKU-GLOVES", "Quantity1": "1", "Amount1": "15.00",
        "Reason": "ORDER_UPDATE",
    }


def test_sample_semicolon_decimal_comma_lower_case() -> None:
    parsed = parse((SAMPLES / "semicolon_decimal_comma.csv").read_bytes())
    assert parsed.columns == ("ActionTrackerId", "Oid", "Amount", "Reason")
    rows = rows_of(parsed)
    assert rows[0].fields == {"ActionTrackerId": "7", "Oid": "ORD-7001", "Amount": "34.75", "Reason": "ORDER_UPDATE"}
    assert rows[1].fields["Amount"] == "0"


def test_sample_xml() -> None:
    parsed = parse((SAMPLES / "order_level.xml").read_bytes())
    assert parsed.format == "xml"
    assert set(parsed.columns) == {"ActionTrackerId", "Oid", "Amount", "Reason", "ActionId"}
    rows = rows_of(parsed)
    assert rows == [
        RawRow(1, {"ActionTrackerId": "7", "Oid": "ORD-5001", "Amount": "0", "Reason": "ITEM_RETURNED"}),
        RawRow(2, {"ActionId": "2001", "Amount": "64.90", "Reason": "ORDER_UPDATE"}),
    ]


def test_sample_bad_rows_parse_fine() -> None:
    rows = rows_of(parse((SAMPLES / "bad_rows.csv").read_bytes()))
    assert len(rows) == 5
    assert rows[0].fields["Amount"] == "twelve"  # values are not judged here
    assert rows[1].fields["Amount"] == "-1.50"
    assert "Reason" not in rows[2].fields
    assert rows[4].fields["Reason"] == "WRONG_REASON"


def test_sample_missing_columns_rejected() -> None:
    err = rejected((SAMPLES / "missing_columns.csv").read_bytes(), file_name="missing_columns.csv")
    assert "Reason" in err.detail and "ActionId" in err.detail
    assert "OrderRef, Refund" in err.detail
    assert err.extra["missing"] == ["Reason", "ActionId"]
    assert err.extra["found"] == ["OrderRef", "Refund"]
    assert err.extra["file_name"] == "missing_columns.csv"


# --- CSV dialects ----------------------------------------------------------------------------


def test_tab_delimited_with_decimal_comma() -> None:
    data = csv_bytes("ActionId\tAmount\tReason\tNote\n1\t1.234,56\tORDER_UPDATE\t2,5 kg\n2\t7\tAPPROVED\t\n")
    rows = rows_of(parse(data))
    assert rows[0].fields == {"ActionId": "1", "Amount": "1234.56", "Reason": "ORDER_UPDATE", "Note": "2,5 kg"}
    assert rows[1].fields == {"ActionId": "2", "Amount": "7", "Reason": "APPROVED"}


def test_semicolon_decimal_comma_only_in_amount_columns() -> None:
    data = csv_bytes(
        "ActionTrackerId;Oid;Sku1;Quantity1;Amount1;Reason;Note\n"
        "3;O-1;S;1,5;12,50;ITEM_RETURNED;1,5\n"
    )
    (row,) = rows_of(parse(data))
    assert row.fields["Amount1"] == "12.50"
    assert row.fields["Quantity1"] == "1,5"  # not an amount column: left for the engine to refuse
    assert row.fields["Note"] == "1,5"


def test_comma_delimited_keeps_a_quoted_decimal_comma() -> None:
    (row,) = rows_of(parse(csv_bytes('ActionId,Amount,Reason\n1,"19,99",ORDER_UPDATE\n')))
    assert row.fields["Amount"] == "19,99"  # a comma file writes decimals with a dot; the engine refuses this


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19,99", "19.99"),
        ("0,5", "0.5"),
        ("-3,10", "-3.10"),
        ("1.234,56", "1234.56"),
        ("12.345.678,9", "12345678.9"),
        ("1 234,56", "1234.56"),
        ("1\u00a0234,56", "1234.56"),
        ("19.99", "19.99"),
        ("1.234", "1.234"),
        ("1,2,3", "1,2,3"),
        ("12.34,5", "12.34,5"),
        ("1.234 567,8", "1.234 567,8"),
        ("abc", "abc"),
        ("19,", "19,"),
    ],
)
def test_decimal_comma_rule(text: str, expected: str) -> None:
    assert decimal_comma_to_dot(text) == expected


def test_quoted_fields_with_delimiters_and_newlines() -> None:
    data = csv_bytes(
        'ActionId,Amount,Reason,Note\r\n'
        '1,10.00,ORDER_UPDATE,"refund, partial"\r\n'
        '2,0,ITEM_RETURNED,"line one\r\nline two ""quoted"""\r\n'
        '3,5,ORDER_UPDATE, "spaced, quoted"\r\n'
    )
    rows = rows_of(parse(data))
    assert [r.number for r in rows] == [1, 2, 3]
    assert rows[0].fields["Note"] == "refund, partial"
    assert rows[1].fields["Note"] == 'line one\r\nline two "quoted"'
    assert rows[2].fields["Note"] == "spaced, quoted"


def test_quoted_semicolon_fields() -> None:
    data = csv_bytes('actionid;amount;reason;note\n1;"2,50";ORDER_UPDATE;"a;b"\n')
    (row,) = rows_of(parse(data))
    assert row.fields == {"ActionId": "1", "Amount": "2.50", "Reason": "ORDER_UPDATE", "Note": "a;b"}


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_ends(newline: str) -> None:
    data = csv_bytes(newline.join(["ActionId,Reason", "1,APPROVED", "2,RESET"]) + newline)
    assert [r.fields for r in parse(data).rows] == [
        {"ActionId": "1", "Reason": "APPROVED"}, {"ActionId": "2", "Reason": "RESET"},
    ]


def test_no_final_newline_and_bom() -> None:
    rows = rows_of(parse(b"\xef\xbb\xbfActionId,Reason\n1,APPROVED"))
    assert rows == [RawRow(1, {"ActionId": "1", "Reason": "APPROVED"})]


def test_excel_sep_hint_line() -> None:
    data = csv_bytes("sep=;\nActionId;Amount;Reason\n1;2,5;ORDER_UPDATE\n")
    parsed = parse(data)
    assert parsed.columns == ("ActionId", "Amount", "Reason")
    assert rows_of(parsed)[0].fields["Amount"] == "2.5"


def test_delimiter_chosen_by_recognised_columns() -> None:
    # Commas inside a semicolon header's names do not fool the detection.
    data = csv_bytes("ActionId;Reason;Note (free, text)\n1;APPROVED;x, y\n")
    parsed = parse(data)
    assert parsed.columns == ("ActionId", "Reason")
    assert rows_of(parsed)[0].fields == {"ActionId": "1", "Reason": "APPROVED"}


# --- columns ---------------------------------------------------------------------------------


def test_case_insensitive_headers_with_spaces_and_unknown_columns() -> None:
    data = csv_bytes(" actionID ,AMOUNT, Reason,Shop,currencycode,CUSTOMERSTATUS,whatever\n"
                     "7, 1.00 ,ORDER_UPDATE,web, usd ,Returned,zzz\n")
    parsed = parse(data)
    assert parsed.columns == ("ActionId", "Amount", "Reason", "CurrencyCode", "CustomerStatus")
    (row,) = rows_of(parsed)
    assert row.fields == {
        "ActionId": "7", "Amount": "1.00", "Reason": "ORDER_UPDATE", "CurrencyCode": "usd",
        "CustomerStatus": "Returned",
    }


def test_order_id_alias() -> None:
    parsed = parse(csv_bytes("ActionTrackerId,OrderId,Amount,Reason\n3,O-9,0,ITEM_RETURNED\n"))
    assert parsed.columns == ("ActionTrackerId", "Oid", "Amount", "Reason")
    assert rows_of(parsed)[0].fields["Oid"] == "O-9"


def test_disposition_code_alias() -> None:
    parsed = parse(csv_bytes("ActionId,DispositionCode\n1,APPROVED\n"))
    assert parsed.columns == ("ActionId", "Reason")
    assert rows_of(parsed)[0].fields == {"ActionId": "1", "Reason": "APPROVED"}


@pytest.mark.parametrize(
    "header",
    ["ActionId,Reason,DispositionCode", "ActionTrackerId,Oid,OrderId,Reason", "ActionId,Amount,amount,Reason"],
)
def test_a_column_twice_is_rejected(header: str) -> None:
    err = rejected(csv_bytes(header + "\n" + ",".join("x" * len(header.split(","))) + "\n"))
    assert "appears twice" in err.detail


def test_item_columns_up_to_1000() -> None:
    parsed = parse(csv_bytes("ActionId,Reason,SKU1000,quantity1000,Sku1001,Sku0\n1,X,s,2,t,u\n"))
    assert parsed.columns == ("ActionId", "Reason", "Sku1000", "Quantity1000")
    assert parsed.item_level is True
    assert rows_of(parsed)[0].fields == {"ActionId": "1", "Reason": "X", "Sku1000": "s", "Quantity1000": "2"}


def test_item_column_without_its_sku_is_rejected() -> None:
    err = rejected(csv_bytes("ActionId,Reason,Sku1,Quantity1,Amount2\n1,X,s,1,2\n"))
    assert "Amount2" in err.detail and "Sku2" in err.detail


@pytest.mark.parametrize(
    ("header", "missing", "named"),
    [
        ("ActionId,Amount", ["Reason"], "Reason"),
        ("ActionTrackerId,Amount,Reason", ["Oid"], "Oid"),
        ("Oid,Amount,Reason", ["ActionTrackerId"], "ActionTrackerId"),
        ("Amount,Note", ["Reason", "ActionId"], "ActionId"),
    ],
)
def test_missing_required_columns(header: str, missing: list[str], named: str) -> None:
    err = rejected(csv_bytes(header + "\n1,2,3\n"))
    assert err.extra["missing"] == missing
    assert named in err.detail
    assert "found: " + header.replace(",", ", ") in err.detail


# --- rows ------------------------------------------------------------------------------------


def test_blank_lines_are_skipped_and_not_counted() -> None:
    data = csv_bytes("\n\nActionId,Reason,Extra\n\n1,APPROVED,\n , ,\n,,\n2,RESET,\n\n,,only extra\n")
    parsed = parse(data)
    rows = rows_of(parsed)
    assert [(r.number, r.fields) for r in rows] == [
        (1, {"ActionId": "1", "Reason": "APPROVED"}),
        (2, {"ActionId": "2", "Reason": "RESET"}),
        (3, {}),  # text only in an ignored column: not blank, the engine reports it
    ]
    assert parsed.total == 3


def test_short_and_long_records() -> None:
    rows = rows_of(parse(csv_bytes("ActionId,Amount,Reason\n1\n2,3,X,extra,more\n")))
    assert rows[0].fields == {"ActionId": "1"}
    assert rows[1].fields == {"ActionId": "2", "Amount": "3", "Reason": "X"}


def test_rows_are_lazy_re_iterable_and_sized() -> None:
    data = csv_bytes("ActionId,Reason\n" + "".join(f"{i},APPROVED\n" for i in range(1, 1001)))
    parsed = parse(data)
    assert isinstance(parsed.rows, Rows)
    assert not isinstance(parsed.rows, list)
    assert len(parsed.rows) == parsed.total == 1000
    it = iter(parsed.rows)
    assert next(it) == RawRow(1, {"ActionId": "1", "Reason": "APPROVED"})
    assert [r.number for r in parsed.rows] == list(range(1, 1001))  # a second, independent pass
    assert next(it).number == 2


def test_raw_row_is_frozen() -> None:
    row = RawRow(1, {"ActionId": "1"})
    with pytest.raises(AttributeError):
        row.number = 2  # type: ignore[misc]


def test_hand_made_parsed_file_total() -> None:
    assert ParsedFile("csv", ("ActionId",), False, [RawRow(1, {})]).total == 1
    assert ParsedFile("csv", ("ActionId",), False, iter([RawRow(1, {})])).total is None


# --- whole-file failures ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\n\r\n  \n", b"\xef\xbb\xbf", b"\xef\xbb\xbf\r\n"])
def test_empty_file(data: bytes) -> None:
    assert "empty" in rejected(data).detail


@pytest.mark.parametrize(
    "data",
    [b"ActionId,Reason\n", b"ActionId,Reason", b"\xef\xbb\xbfActionId;Reason\r\n\r\n;\r\n ; \r\n"],
)
def test_header_but_no_rows(data: bytes) -> None:
    assert rejected(data).detail == "The file has a header but no rows."


def test_random_binary_garbage() -> None:
    garbage = random.Random(7).randbytes(20_000)
    err = rejected(garbage)
    assert "binary" in err.detail or "UTF-8" in err.detail


@pytest.mark.parametrize(
    ("head", "word"),
    [
        (b"\x89PNG\r\n\x1a\n", "image"),
        (b"%PDF-1.7\n", "PDF"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "xls"),
        (b"BZh91AY&SY", "bzip2"),
    ],
)
def test_known_non_tables(head: bytes, word: str) -> None:
    assert word in rejected(head + b"\x00" * 100 + b"ActionId,Reason\n1,X\n").detail


def test_prose_is_not_a_table() -> None:
    err = rejected(b"Dear team,\nplease find attached the returns.\nRegards\n")
    assert "not a returns file" in err.detail


def test_nul_byte_after_the_head_is_binary() -> None:
    data = csv_bytes("ActionId,Reason\n" + "1,APPROVED\n" * 20_000) + b"2,\x00\n"
    assert "binary" in rejected(data).detail


def test_invalid_utf8_far_into_the_file() -> None:
    body = "".join(f"{i},APPROVED,ok\n" for i in range(1, 50_001))
    data = csv_bytes("ActionId,Reason,Note\n" + body) + "50001,APPROVED,caf\u00e9\n".encode("latin-1")
    err = rejected(data)
    assert err.detail.startswith("The file is not UTF-8 text")
    assert "line 50002" in err.detail
    assert err.extra["line"] == 50002


def test_invalid_utf8_in_the_header() -> None:
    err = rejected("ActionId,Reason,Not\u00e9\n1,X,y\n".encode("cp1252"))
    assert "not UTF-8" in err.detail


def test_utf8_cut_in_the_middle_of_a_character() -> None:
    data = csv_bytes("ActionId,Reason,Note\n1,X,caf") + "é".encode()[:1]
    assert "not UTF-8" in rejected(data).detail


def test_utf16_text() -> None:
    data = "ActionId,Reason\r\n1,APPROVED\r\n".encode("utf-16")
    assert "UTF-16" in rejected(data).detail
    assert "UTF-16" in rejected("ActionId,Reason\r\n1,APPROVED\r\n".encode("utf-16-le")).detail
    assert "UTF-16" in rejected("ActionId,Reason\r\n1,APPROVED\r\n".encode("utf-16-be")).detail
    assert "binary" in rejected(b"\x00" * 5000).detail


def test_quote_left_open_on_a_big_file() -> None:
    data = csv_bytes('ActionId,Reason,Note\n1,X,"open quote\n' + "2,Y,z\n" * 40_000)
    err = rejected(data)
    assert "quote" in err.detail


def test_absurdly_long_line() -> None:
    data = csv_bytes("ActionId,Reason,Note\n1,X," + "a" * (2 * 1024 * 1024) + "\n")
    assert "longer than" in rejected(data).detail


def test_plain_file_above_the_limit() -> None:
    data = csv_bytes("ActionId,Reason\n" + "1,APPROVED\n" * 1000)
    err = rejected(data, limits=Limits(max_expanded_bytes=1000))
    assert "larger than the limit" in err.detail


def test_file_name_is_quoted_back() -> None:
    assert rejected(b"", file_name="returns.csv").extra["file_name"] == "returns.csv"


# --- XML -------------------------------------------------------------------------------------


def test_xml_namespaces_blank_rows_and_unknown_elements() -> None:
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<r:Returns xmlns:r="urn:x">
  <r:Row><r:ActionId> 1 </r:ActionId><r:DispositionCode>APPROVED</r:DispositionCode><Shop>x</Shop></r:Row>
  <r:Row/>
  <r:Row>   </r:Row>
  <r:Row><ORDERID>O-1</ORDERID><actiontrackerid>3</actiontrackerid><Amount>19,99</Amount><Reason/></r:Row>
</r:Returns>"""
    parsed = parse(data)
    assert parsed.columns == ("ActionId", "Reason", "Oid", "ActionTrackerId", "Amount")
    assert rows_of(parsed) == [
        RawRow(1, {"ActionId": "1", "Reason": "APPROVED"}),
        RawRow(2, {"Oid": "O-1", "ActionTrackerId": "3", "Amount": "19,99"}),  # no decimal-comma rule in XML
    ]


def test_xml_with_bom_and_gzip() -> None:
    xml = b"\xef\xbb\xbf\n<A><R><ActionId>1</ActionId><Reason>X</Reason></R></A>"
    assert rows_of(parse(xml)) == [RawRow(1, {"ActionId": "1", "Reason": "X"})]
    assert parse(gzip.compress(xml)).format == "xml+gzip"


def test_xml_nested_text_is_the_columns_text() -> None:
    xml = b"<A><R><ActionId>1</ActionId><Reason><b>APP</b>ROVED</Reason></R></A>"
    assert rows_of(parse(xml))[0].fields["Reason"] == "APPROVED"


def test_xml_huge_text_or_too_many_elements() -> None:
    big = b"<A><R><ActionId>1</ActionId><Reason>" + b"x" * (2 << 20) + b"</Reason></R></A>"
    assert "more than 1 MB of text" in rejected(big).detail
    wide = b"<A><R><ActionId>1</ActionId><Reason>X</Reason>" + b"<Foo/>" * 20_001 + b"</R></A>"
    assert "more than 20000 elements" in rejected(wide).detail


def test_xml_item_level() -> None:
    data = (b"<Actions><Action><ActionId>1</ActionId><Reason>ITEM_RETURNED</Reason>"
            b"<Sku1>A</Sku1><Quantity1>0</Quantity1></Action></Actions>")
    parsed = parse(data)
    assert parsed.item_level is True
    assert rows_of(parsed)[0].fields == {"ActionId": "1", "Reason": "ITEM_RETURNED", "Sku1": "A", "Quantity1": "0"}


def test_xml_missing_columns() -> None:
    err = rejected(b"<Actions><Action><OrderNumber>1</OrderNumber><Total>0</Total></Action></Actions>")
    assert err.extra["missing"] == ["Reason", "ActionId"]
    assert "OrderNumber, Total" in err.detail


def test_xml_without_rows() -> None:
    assert "no rows" in rejected(b"<?xml version='1.0'?>\n<Actions>\n</Actions>\n").detail
    assert "no rows" in rejected(b"<Actions><Action/><Action> </Action></Actions>").detail


def test_xml_element_twice_in_a_row() -> None:
    err = rejected(b"<A><R><ActionId>1</ActionId><Reason>X</Reason><DispositionCode>Y</DispositionCode></R></A>")
    assert "twice" in err.detail and "Row 1" in err.detail


@pytest.mark.parametrize(
    "data",
    [
        b"<Actions><Action><ActionId>1</ActionId><Reason>X</Reason></Action>",
        b"<Actions><Action><ActionId>1</Reason></Action></Actions>",
        b"<?xml version='1.0'?>",
        b"<Actions></Actions><More/>",
    ],
)
def test_xml_not_well_formed(data: bytes) -> None:
    assert "not well-formed XML" in rejected(data).detail


def test_xml_billion_laughs_refused_quickly() -> None:
    lol = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Actions><Action><ActionId>1</ActionId><Reason>&lol9;</Reason></Action></Actions>"""
    start = time.perf_counter()
    err = rejected(lol)
    assert time.perf_counter() - start < 2
    assert "refused for safety" in err.detail


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<Actions><Action><ActionId>1</ActionId><Reason>&x;</Reason></Action></Actions>",
        b'<?xml version="1.0"?><!DOCTYPE Actions SYSTEM "http://example.invalid/a.dtd">'
        b"<Actions><Action><ActionId>1</ActionId><Reason>X</Reason></Action></Actions>",
        b'<?xml version="1.0"?><!DOCTYPE Actions [<!ENTITY % p SYSTEM "http://example.invalid/p">%p;]>'
        b"<Actions/>",
    ],
)
def test_xml_external_entities_and_dtds_refused(data: bytes) -> None:
    assert "refused for safety" in rejected(data).detail


# --- XLSX ------------------------------------------------------------------------------------


def test_xlsx_numbers_as_people_see_them() -> None:
    data = xlsx_of([
        [" ActionID", "Amount", "dispositioncode", "Extra", None, "Note"],
        [1042, 19.99, "ORDER_UPDATE", "x", "ignored", "  a note  "],
        [None, None, None, None],
        [1043, 0.1 + 0.2, "ORDER_UPDATE", None, None, dt.date(2024, 5, 1)],
        [1044, 80.0, "ITEM_RETURNED"],
        [1045, 19.989999999999998, "ORDER_UPDATE", None, None, True],
        ["1046", 1e-7, "ORDER_UPDATE"],
        [1047, 1234567.891, "ORDER_UPDATE"],
    ])
    parsed = parse(data, "returns.xlsx")
    assert parsed.format == "xlsx"
    assert parsed.columns == ("ActionId", "Amount", "Reason", "Note")
    rows = rows_of(parsed)
    assert [r.fields for r in rows] == [
        {"ActionId": "1042", "Amount": "19.99", "Reason": "ORDER_UPDATE", "Note": "a note"},
        {"ActionId": "1043", "Amount": "0.3", "Reason": "ORDER_UPDATE", "Note": "2024-05-01T00:00:00"},
        {"ActionId": "1044", "Amount": "80", "Reason": "ITEM_RETURNED"},
        {"ActionId": "1045", "Amount": "19.99", "Reason": "ORDER_UPDATE", "Note": "TRUE"},
        {"ActionId": "1046", "Amount": "0.0000001", "Reason": "ORDER_UPDATE"},
        {"ActionId": "1047", "Amount": "1234567.891", "Reason": "ORDER_UPDATE"},
    ]
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert parsed.total == 6


@pytest.mark.parametrize(
    ("value", "text"),
    [(19.99, "19.99"), (45.5, "45.5"), (80.0, "80"), (3, "3"), (-0.01, "-0.01"), (1.5e16, "15000000000000000"),
     (12345678901234567, "12345678901234567"), (None, ""), (" x ", "x"), (False, "FALSE")],
)
def test_cell_text(value: object, text: str) -> None:
    assert cell_text(value) == text


def test_xlsx_header_only_and_missing_columns() -> None:
    assert rejected(xlsx_of([["ActionId", "Reason"]])).detail == "The file has a header but no rows."
    err = rejected(xlsx_of([["OrderNumber", "Total"], ["O-1", 0]]))
    assert err.extra["missing"] == ["Reason", "ActionId"]
    assert "empty" in rejected(xlsx_of([])).detail


def test_xlsx_in_zip_and_gzip() -> None:
    book = xlsx_of([["ActionId", "Reason"], [1, "APPROVED"]])
    assert parse(zip_of({"returns.xlsx": book})).format == "xlsx+zip"
    parsed = parse(gzip.compress(book))
    assert parsed.format == "xlsx+gzip"
    assert rows_of(parsed) == [RawRow(1, {"ActionId": "1", "Reason": "APPROVED"})]


def test_damaged_xlsx() -> None:
    data = zip_of({"[Content_Types].xml": b"<nope", "xl/workbook.xml": b"not xml"})
    assert "XLSX workbook cannot be read" in rejected(data).detail


def test_xlsx_with_a_dtd_is_refused() -> None:
    book = xlsx_of([["ActionId", "Reason"], [1, "APPROVED"]])
    src = zipfile.ZipFile(io.BytesIO(book))
    parts = {name: src.read(name) for name in src.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"]
    assert sheet.startswith(b"<worksheet")
    parts["xl/worksheets/sheet1.xml"] = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>' + sheet
    )
    assert "cannot be read" in rejected(zip_of(parts)).detail


def test_xlsx_zip_bomb_by_ratio() -> None:
    book = xlsx_of([["ActionId", "Reason"], [1, "APPROVED"]])
    src = zipfile.ZipFile(io.BytesIO(book))
    parts = {name: src.read(name) for name in src.namelist()}
    sheet = parts["xl/worksheets/sheet1.xml"]
    parts["xl/worksheets/sheet1.xml"] = sheet.replace(b"<sheetData>", b"<sheetData>" + b" " * (12 << 20), 1)
    start = time.perf_counter()
    assert "zip bomb" in rejected(zip_of(parts)).detail
    assert time.perf_counter() - start < 2


def test_xlsx_parts_declared_too_large() -> None:
    book = xlsx_of([["ActionId", "Reason"], [1, "APPROVED"]])
    assert "larger than the limit" in rejected(book, limits=Limits(max_expanded_bytes=2000)).detail


# --- gzip and zip ----------------------------------------------------------------------------

ORDER_CSV = b"ActionId,Amount,Reason\r\n1,10.00,ORDER_UPDATE\r\n2,0,ITEM_RETURNED\r\n"


def test_gzip_csv() -> None:
    parsed = parse(gzip.compress(ORDER_CSV), "returns.csv")  # the name is not trusted
    assert parsed.format == "csv+gzip"
    assert [r.fields["ActionId"] for r in parsed.rows] == ["1", "2"]


def test_multi_member_gzip() -> None:
    data = gzip.compress(ORDER_CSV[:30]) + gzip.compress(ORDER_CSV[30:])
    assert len(rows_of(parse(data))) == 2


def test_zip_csv_ignores_directories_and_mac_junk() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("returns/", b"")
        zf.writestr("returns/march.csv", ORDER_CSV)
        zf.writestr("__MACOSX/returns/._march.csv", b"\x00\x05\x16\x07junk")
        zf.writestr("returns/.DS_Store", b"\x00\x00\x00\x01Bud1")
    parsed = parse(buf.getvalue())
    assert parsed.format == "csv+zip"
    assert len(rows_of(parsed)) == 2


def test_zip_xml() -> None:
    xml = b"<Actions><Action><ActionId>1</ActionId><Reason>APPROVED</Reason></Action></Actions>"
    assert parse(zip_of({"r.xml": xml}, zipfile.ZIP_STORED)).format == "xml+zip"


def test_zip_with_several_files() -> None:
    err = rejected(zip_of({"a.csv": ORDER_CSV, "b.csv": ORDER_CSV}))
    assert "holds 2 files" in err.detail and "a.csv" in err.detail


def test_empty_zip() -> None:
    assert "holds no file" in rejected(zip_of({})).detail
    assert "holds no file" in rejected(zip_of({"dir/": b""})).detail


def test_empty_gzip() -> None:
    assert "empty" in rejected(gzip.compress(b"")).detail


def test_archive_inside_an_archive() -> None:
    assert "another archive" in rejected(zip_of({"r.csv.gz": gzip.compress(ORDER_CSV)})).detail
    assert "another archive" in rejected(gzip.compress(zip_of({"r.csv": ORDER_CSV}))).detail


def test_damaged_archives() -> None:
    whole = gzip.compress(ORDER_CSV * 50)
    assert "damaged" in rejected(whole[: len(whole) // 2] + whole[-8:]).detail
    corrupt = bytearray(zip_of({"r.csv": ORDER_CSV * 50}))
    corrupt[60:80] = b"\xff" * 20
    assert "damaged" in rejected(bytes(corrupt)).detail
    assert "damaged" in rejected(b"PK\x03\x04" + b"\x00" * 40).detail


def test_password_protected_zip() -> None:
    data = bytearray(zip_of({"r.csv": ORDER_CSV}))
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x01  # the "encrypted" flag, as the central directory states it
    assert "password-protected" in rejected(bytes(data)).detail


def test_compressed_size_limit() -> None:
    data = gzip.compress(ORDER_CSV * 100)
    err = rejected(data, limits=Limits(max_compressed_bytes=len(data) - 1))
    assert "compressed file is larger than the limit" in err.detail


def test_gzip_bomb_refused_without_expanding_it() -> None:
    # 10 GB of zeros in 10 MB: many small gzip members, as the format allows.
    member = gzip.compress(b"\x00" * (1 << 20), 9)
    bomb = member * 10_240
    start = time.perf_counter()
    assert "binary" in rejected(bomb).detail
    assert time.perf_counter() - start < 3


def test_gzip_bomb_of_plausible_rows_stops_at_the_limit() -> None:
    rows = gzip.compress(b"1,APPROVED\n" * 100_000, 9)  # 1.1 MB each
    bomb = gzip.compress(b"ActionId,Reason\n") + rows * 40
    limits = Limits(max_expanded_bytes=4 * 1024 * 1024)
    start = time.perf_counter()
    err = rejected(bomb, limits=limits)
    assert time.perf_counter() - start < 3
    assert "larger than the limit of 4 MB" in err.detail


def test_gzip_above_the_limit_with_an_honest_trailer() -> None:
    data = gzip.compress(b"ActionId,Reason\n" + b"1,APPROVED\n" * 200_000)
    assert "larger than the limit" in rejected(data, limits=Limits(max_expanded_bytes=1_000_000)).detail


def test_truncated_gzip_is_damaged_not_too_large() -> None:
    data = gzip.compress(b"ActionId,Reason\n" + b"1,APPROVED\n" * 1000)
    for cut in (1, 5, 20):
        assert "damaged" in rejected(data[:-cut]).detail


def test_zip_bomb_refused_quickly() -> None:
    bomb = zip_of({"bomb.csv": b"ActionId,Reason\n" + b"0" * (50 << 20)})
    assert len(bomb) < 200_000
    start = time.perf_counter()
    err = rejected(bomb, limits=Limits(max_expanded_bytes=10 << 20))
    assert time.perf_counter() - start < 1
    assert "larger than the limit" in err.detail


def test_zip_member_lying_about_its_size_is_damaged() -> None:
    honest = zip_of({"r.csv": ORDER_CSV * 1000})
    # Shrink the declared size in both headers: zipfile stops there and the CRC then fails.
    real = len(ORDER_CSV * 1000).to_bytes(4, "little")
    fake = (100).to_bytes(4, "little")
    lying = honest.replace(real, fake)
    assert lying != honest
    assert "damaged" in rejected(lying).detail


def test_other_archives_and_office_files_in_zip() -> None:
    ods = zip_of({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet", "content.xml": b"<x/>"})
    assert "OpenDocument" in rejected(ods).detail
    docx = zip_of({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"})
    assert "Word" in rejected(docx).detail
