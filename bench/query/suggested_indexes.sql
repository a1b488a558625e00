-- Candidate indexes for teleconsult's C-FIND on PostgreSQL, tried with
--   .venv/bin/python -m bench.query --try-sql bench/query/suggested_indexes.sql
-- (run in the benchmark's throw-away schema only; see README.md for the measured effect).
--
-- Person names match as upper(<group>) LIKE 'PREFIX%' on each of the three
-- component groups (teleconsult/storage/matching.py). The plain btree
-- indexes on the columns cannot serve upper(), and under a non-C collation
-- (this server: C.UTF-8) a btree serves LIKE prefixes only with
-- text_pattern_ops. One expression index per group lets the planner answer
-- "王小*" with a BitmapOr of three index range scans instead of reading
-- every patient.
CREATE INDEX ix_patients_upper_name_alphabetic ON patients (upper(patient_name_alphabetic) text_pattern_ops);
CREATE INDEX ix_patients_upper_name_ideographic ON patients (upper(patient_name_ideographic) text_pattern_ops);
CREATE INDEX ix_patients_upper_name_phonetic ON patients (upper(patient_name_phonetic) text_pattern_ops);
