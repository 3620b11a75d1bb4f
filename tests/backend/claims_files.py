"""Hand-made payer files: claims of BlueCross (two months) and Aetna (inpatient stays) and BlueCross's member file.

tests/backend/test_claims_api.py works out by hand what the claims marts and API must say of them; the session
warehouse of the API tests (tests/backend/conftest.py) loads them too, so that every claims endpoint has rows.
"""

BLUECROSS = ("ClaimID,MemberID,ProviderNPI,ClaimDate,ServiceFromDate,ServiceToDate,DiagnosisCode,ProcedureCode,"
             "BilledAmount,AllowedAmount,PaidAmount,Status,Type")
AETNA = ("claim_number,patient_id,provider_tax_id,claim_received_date,service_date,admit_date,discharge_date,"
         "primary_diagnosis,procedure,charge_amount,approved_amount,payment_amount,claim_status,service_category")
C2 = "C2,M2,1000000002,2024-01-20,2024-01-11,2024-01-11,E11.9,99214,200,150,120,Paid,Professional"
FILES = {
    "claims/provider=bluecross/year=2024/month=01/batch1.csv": [
        BLUECROSS,
        "C1,M1,1000000001,2024-01-20,2024-01-10,2024-01-10,E11.9,99213,100,90,80,Paid,Professional",
        C2,
        # C1's member, provider, day and procedure under another id, received later: a suspected duplicate.
        "C3,M1,1000000001,2024-01-25,2024-01-10,2024-01-10,E11.9,99213,100,90,80,Paid,Professional",
        # Received on the 12th for service until the 15th: 3 days.
        "C4,M3,1000000003,2024-01-12,2024-01-08,2024-01-15,I10,99214,300,250,200,Paid,Professional",
    ],
    "claims/provider=aetna/year=2024/month=01/stays.csv": [
        AETNA,
        'S1,A1,3000000001,01/09/2024,01/02/2024,01/02/2024,01/06/2024,I10,99223,"$1,500.00","$1,000.00",$900.00,Paid,Inpatient',
        # Admitted again 14 days after S1's discharge, elsewhere: a readmission of 3000000001's stay.
        'S2,A1,3000000002,02/25/2024,01/20/2024,01/20/2024,01/23/2024,I10,99223,"$1,200.00",$800.00,$700.00,Paid,Inpatient',
    ],
    "claims/provider=bluecross/year=2024/month=02/batch1.csv": [
        BLUECROSS,
        C2,  # sent again unchanged: an exact re-send, counted once
        "C5,M2,1000000002,2024-02-20,2024-02-05,2024-02-05,E11.9,99213,100,80,60,Paid,Professional",
    ],
    "eligibility/provider=bluecross/year=2024/month=01/members.csv": [
        "member_id,payer,plan,start_date,end_date,birth_date,sex",
        "M1,BlueCross,ppo,2024-01-01,2024-02-29,1970-05-01,F",
        "M2,BlueCross,ppo,2024-01-15,2024-03-31,1985-07-12,M",
        "M3,BlueCross,ppo,2024-01-01,2024-01-31,1990-01-30,F",
        "M5,BlueCross,hmo,2024-02-01,2024-02-29,1960-11-02,M",
    ],
}
