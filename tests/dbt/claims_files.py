"""Small BlueCross claims files and plain member files, written by the claims incremental tests (each row given by the
test, so that the expected figures are the test's own)."""

from __future__ import annotations

BLUECROSS_HEADER = ("ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,"
                    "ProcedureCode,BilledAmount,AllowedAmount,PaidAmount,Status,Type\n")
MEMBERS_HEADER = "member_id,payer,plan,start_date,end_date,birth_date,sex\n"


def bluecross_claims(*rows: tuple[str, str, str, int]) -> bytes:
    """(claim id, member, service day, paid) rows: billed is twice paid, allowed paid plus 10."""
    lines = [f"{claim},{member},1234567890,{day},{day},{day},E11.9,99213,{2 * paid}.00,{paid + 10}.00,{paid}.00,"
             "Paid,Professional\n" for claim, member, day, paid in rows]
    return (BLUECROSS_HEADER + "".join(lines)).encode()


def bluecross_members(*rows: str) -> bytes:
    """A member file of the plain payer layout, one line per row given (member, payer, plan, start, end, ...)."""
    return (MEMBERS_HEADER + "".join(f"{row}\n" for row in rows)).encode()
