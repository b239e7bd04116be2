from payoutdesk.kit import db
from payoutdesk.submissions import service as submissions
from payoutdesk.submissions import engine as sub_engine
from payoutdesk.worker.runner import claim
from tests.helpers import conversion, make_world


def test_huge_quantity(engine):
    w = make_world(engine)
    a = conversion(w, "O-1", amount=None, items=[{"sku": "RED", "quantity": 1, "amount": "10.00"},
                                                  {"sku": "BLUE", "quantity": 1, "amount": "10.00"}])
    b = conversion(w, "O-2", "10.00")
    with db.write(engine) as conn:
        s = submissions.create_from_rows(conn, w.actor, w.campaign_id, [
            {"ActionId": b, "Amount": "5.00", "Reason": "ORDER_UPDATE"},
            {"ActionId": a, "Sku1": "RED", "Quantity1": "99999999999", "Amount1": "5.00", "Reason": "ITEM_RETURNED"}])
    sid = submissions.parse_id(s["id"])
    assert claim(engine, sid, "w")
    done = sub_engine.process(engine, sid, "w")
    print(done.status, done.applied, done.errors)
    with db.read(engine) as conn:
        print(submissions.errors(conn, w.account_id, sid))
