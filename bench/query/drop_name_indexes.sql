-- What migration 0006's person-name indexes are worth: take them away and measure again,
--   .venv/bin/python -m bench.query --no-orthanc --try-sql bench/query/drop_name_indexes.sql
-- ("before" is with the indexes, as every index has them; "after" is without).
-- Throw-away schema only.
DROP INDEX ix_patients_patient_name_alphabetic_ci;
DROP INDEX ix_patients_patient_name_ideographic_ci;
DROP INDEX ix_patients_patient_name_phonetic_ci;
