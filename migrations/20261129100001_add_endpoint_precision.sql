-- Arithmetic an endpoint's replicas use: f32 (default) or bf16 (bfloat16 on CPUs
-- with AMX / AVX512-BF16, through the OpenVINO engine; see docs/BENCHMARKS.md).
ALTER TABLE endpoints ADD COLUMN precision TEXT NOT NULL DEFAULT 'f32'
    CONSTRAINT endpoints_precision_check CHECK (precision IN ('f32', 'bf16'));
