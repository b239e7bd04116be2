from tests.zz_local_stats import C, test_stats


def test_lane_hits(engine, monkeypatch):
    from payoutdesk.submissions import engine as E
    from payoutdesk.ledger import workflow as wf
    o1, o2 = E.one_item_payout, wf.quick_modify

    def c1(*a):
        C["lane one item"] += 1
        return o1(*a)

    def c2(*a):
        r = o2(*a)
        C["lane quick_modify " + ("slow" if r == wf.SLOW else "unchanged" if r is None else "change")] += 1
        return r
    monkeypatch.setattr(E, "one_item_payout", c1)
    monkeypatch.setattr(wf, "quick_modify", c2)
    test_stats(engine, monkeypatch)
