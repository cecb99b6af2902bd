// Circuit Catalogue graph schema for Neo4j 5 Community. Applied idempotently when a store opens.
// Statements are separated by semicolons; see schema/README.md for the graph model.
CREATE CONSTRAINT model_name IF NOT EXISTS FOR (m:Model) REQUIRE m.name IS UNIQUE;
CREATE CONSTRAINT task_name IF NOT EXISTS FOR (t:Task) REQUIRE t.name IS UNIQUE;
CREATE CONSTRAINT circuit_id IF NOT EXISTS FOR (c:Circuit) REQUIRE c.id IS UNIQUE;
CREATE CONSTRAINT component_uid IF NOT EXISTS FOR (n:Component) REQUIRE n.uid IS UNIQUE;
CREATE CONSTRAINT edge_uid IF NOT EXISTS FOR (e:Edge) REQUIRE e.uid IS UNIQUE;
CREATE INDEX component_model_idx IF NOT EXISTS FOR (n:Component) ON (n.model, n.idx);
CREATE INDEX edge_model_idx IF NOT EXISTS FOR (e:Edge) ON (e.model, e.idx);
CREATE INDEX component_model_name IF NOT EXISTS FOR (n:Component) ON (n.model, n.name);
CREATE INDEX edge_model_name IF NOT EXISTS FOR (e:Edge) ON (e.model, e.name);
CREATE INDEX circuit_model IF NOT EXISTS FOR (c:Circuit) ON (c.model);
CREATE INDEX circuit_task IF NOT EXISTS FOR (c:Circuit) ON (c.task);
CREATE INDEX circuit_method IF NOT EXISTS FOR (c:Circuit) ON (c.method);
CREATE INDEX circuit_created IF NOT EXISTS FOR (c:Circuit) ON (c.created_at);
CREATE CONSTRAINT evaluation_id IF NOT EXISTS FOR (e:Evaluation) REQUIRE e.id IS UNIQUE;
CREATE INDEX evaluation_model_task IF NOT EXISTS FOR (e:Evaluation) ON (e.model, e.task);
CREATE CONSTRAINT stability_id IF NOT EXISTS FOR (s:Stability) REQUIRE s.id IS UNIQUE;
CREATE CONSTRAINT meta_name IF NOT EXISTS FOR (m:Meta) REQUIRE m.name IS UNIQUE;
